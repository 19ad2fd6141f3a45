"""An agent's identity files and the context a conversation process shows its model."""
