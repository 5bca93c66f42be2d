"""Pure security logic with no I/O: bearer-token verification (`tokens`), signing keys and key
sets (`keys`), and the payload envelope of encryption at rest (`envelope`). The actors that fetch
key sets and the HTTP gate that applies them live in queen/actors and queen/http."""
