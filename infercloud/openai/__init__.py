"""The OpenAI wire format shared by workers and the gateway: request models, errors, SSE framing."""
