"""The gateway: the front door that proxies the OpenAI API to replicas chosen by the router."""
