"""Collections: documents for retrieval, per owner: chunked, embedded through the server's own embedding model,
stored in SQL and searched in memory (docs/collections.md).

    routes.py    the HTTP routes; install_on_worker / install_on_gateway
    protocol.py  the API's request bodies and limits       errors.py   its failures, as OpenAI errors
    service.py   the API in-process (pipelines use it)      rows.py     the typed values passed around
    store.py     collections, documents, chunks in SQL      ingest.py   texts -> chunks -> vectors, via Embed
    chunking.py  overlapping word windows                   embed.py    Embed: texts -> vectors, on either server
    live.py      a collection's index in memory, by version  filters.py  metadata filters (inverted index)
    index.py     VectorIndex, and ExactIndex (numpy)         hnsw.py     HnswIndex (usearch), the default
"""
