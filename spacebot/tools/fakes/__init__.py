"""Loopback fakes of the outside services worker tools talk to, for tests and local trials."""
