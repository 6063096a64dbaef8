"""OpenAI's Responses API on top of chat completions, with stored conversations (POST/GET/DELETE /v1/responses).

translate.py: the pure mapping Responses request -> chat body and chat reply -> Response object.
stream.py: chat SSE chunks -> the Responses event stream.
store.py: the stored responses in SQL, per owner, with expiry.
service.py: the routes, shared by the single-box worker (chat served in-process) and the gateway
(chat through the gateway's own handling: auth, admission, metering, routing, failover).
"""
