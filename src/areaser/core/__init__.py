"""What every layer shares: the error base and the registry of named things (the bottom layer)."""
