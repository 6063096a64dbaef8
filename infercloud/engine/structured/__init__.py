"""Grammar-constrained decoding: a request's output held to a JSON schema, regex, choice, EBNF or tool-call format."""
