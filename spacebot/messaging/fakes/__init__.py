"""Loopback fakes of chat platforms that the real platform SDKs talk to, for tests and smoke runs."""
