"""The SQL schema of what must survive a restart: tenants, API keys, the usage ledger, deployment secrets,
stored responses.

Times are naive UTC datetimes (store/database.py's `utcnow`), the same on every backend.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

tenants = sa.Table(
    "tenants", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("tier", sa.String(20), nullable=False),
    sa.Column("models", sa.JSON, nullable=True),            # allowed model names; NULL: all
    sa.Column("requests_per_minute", sa.Integer, nullable=True),
    sa.Column("tokens_per_minute", sa.Integer, nullable=True),
    sa.Column("max_concurrent", sa.Integer, nullable=True),
    sa.Column("max_tokens_per_request", sa.Integer, nullable=True),
    sa.Column("budget_usd", sa.Float, nullable=True),
    sa.Column("budget_period", sa.String(10), nullable=False),
    sa.Column("salt_prefix_cache", sa.Boolean, nullable=False),  # no longer read (every tenant is salted); written True
    sa.Column("home_region", sa.String(50), nullable=True),
    sa.Column("regions", sa.JSON, nullable=True),           # data residency: allowed regions; NULL: any
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("cache_group", sa.String(100), nullable=True),  # tenants of a group share cached blocks; NULL: none
)

deployment_secrets = sa.Table(  # made once by the first process that needs one (tenancy/cache_salt.py)
    "deployment_secrets", metadata,
    sa.Column("name", sa.String(50), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),     # hex
)

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=False, index=True),
    sa.Column("prefix", sa.String(16), nullable=False, unique=True),   # shown in listings, used for lookup
    sa.Column("key_hash", sa.String(64), nullable=False),              # sha256 of the whole key, hex
    sa.Column("name", sa.String(100), nullable=True),
    sa.Column("is_admin", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=True),
    sa.Column("revoked_at", sa.DateTime, nullable=True),
)

usage = sa.Table(
    "usage", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(80), nullable=False, index=True),
    sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("key_id", sa.Integer, sa.ForeignKey("api_keys.id"), nullable=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("endpoint", sa.String(40), nullable=False),
    sa.Column("replica", sa.String(100), nullable=True),
    sa.Column("tier", sa.String(20), nullable=False),
    sa.Column("outcome", sa.String(20), nullable=False),     # completed | aborted | failed | migrated
    sa.Column("status", sa.Integer, nullable=True),          # HTTP status the client got (streams: 200)
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("cached_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("device_seconds", sa.Float, nullable=False),
    sa.Column("ttft_s", sa.Float, nullable=True),
    sa.Column("e2e_s", sa.Float, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=False),         # billed: token prices
    sa.Column("device_cost_usd", sa.Float, nullable=False),  # the operator's: device-seconds x device price
    sa.Column("ended_at", sa.DateTime, nullable=False),
    sa.Column("event_id", sa.String(32), nullable=True),     # the usage event's uuid4 hex; NULL on older rows
    sa.Column("stage", sa.String(120), nullable=True),       # a pipeline's stage ("rag/generate"); NULL otherwise
    sa.Index("ix_usage_tenant_time", "tenant_id", "ended_at"),
    sa.Index("ux_usage_event_id", "event_id", unique=True),  # a row retried or replayed is never written twice
)


responses = sa.Table(  # stored Responses API responses (infercloud/responses/store.py), each of one owner
    "responses", metadata,
    sa.Column("id", sa.String(64), primary_key=True),                # resp_<hex>
    sa.Column("owner", sa.String(120), nullable=False),              # "tenant:<id>", or "open" without tenancy
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),            # past it the row is never returned
    sa.Column("previous_response_id", sa.String(64), nullable=True),
    sa.Column("root_id", sa.String(64), nullable=False),             # the conversation's first response
    sa.Column("request", sa.JSON, nullable=False),                   # the body as validated
    sa.Column("input_items", sa.JSON, nullable=False),               # this turn's input items, with ids
    sa.Column("output", sa.JSON, nullable=False),                    # its output items
    sa.Column("messages", sa.JSON, nullable=False),                  # the chat messages that continue it
    sa.Column("usage", sa.JSON, nullable=True),
    sa.Column("response", sa.JSON, nullable=False),                  # the Response object as returned
    sa.Index("ix_responses_expires_at", "expires_at"),
    sa.Index("ix_responses_root_id", "root_id"),                     # a conversation's responses (its limits)
)


pipelines = sa.Table(  # pipelines made through the admin API (infercloud/pipelines/registry.py); the config's are not here
    "pipelines", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("spec", sa.JSON, nullable=False),                      # as posted: PipelineSpec's fields
    sa.Column("created_at", sa.DateTime, nullable=False),
)


collections = sa.Table(  # document collections for retrieval (infercloud/collections/store.py), each of one owner
    "collections", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("owner", sa.String(120), nullable=False),              # "tenant:<id>", or "open" without tenancy
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("embedding_model", sa.String(200), nullable=False),
    sa.Column("dimensions", sa.Integer, nullable=True),              # its vectors' size; NULL until the first
    sa.Column("chunking", sa.JSON, nullable=False),                  # {max_words, overlap_words}
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),                # +1 on every write: stale indexes rebuild
    sa.Column("num_documents", sa.Integer, nullable=False),
    sa.Column("num_chunks", sa.Integer, nullable=False),
    sa.UniqueConstraint("owner", "name", name="ux_collections_owner_name"),
)

collection_documents = sa.Table(
    "collection_documents", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("collection_id", sa.Integer, sa.ForeignKey("collections.id", ondelete="CASCADE"), nullable=False),
    sa.Column("doc_id", sa.String(128), nullable=False),             # the client's id, unique in its collection
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),                  # {str: str | int | float | bool}
    sa.Column("num_chunks", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),            # of its latest version (an upsert renews it)
    sa.UniqueConstraint("collection_id", "doc_id", name="ux_collection_documents_doc_id"),
)

collection_chunks = sa.Table(
    "collection_chunks", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("collection_id", sa.Integer, sa.ForeignKey("collections.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("document_id", sa.Integer, sa.ForeignKey("collection_documents.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("chunk_index", sa.Integer, nullable=False),            # its place in the document, from 0
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("embedding", sa.LargeBinary, nullable=False),          # float32 little-endian, unit length
)

audit = sa.Table(  # governance: every policy decision and every admin change (infercloud/policy/audit.py)
    "audit", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),                # policy | admin
    sa.Column("tenant_id", sa.Integer, nullable=True, index=True),   # whose request (policy) or whom it changed
    sa.Column("key_id", sa.Integer, nullable=True),                  # the key that made the request or change
    sa.Column("request_id", sa.String(80), nullable=True),
    sa.Column("rule", sa.String(100), nullable=True),                # policy: the rule's name
    sa.Column("mode", sa.String(20), nullable=True),                 # policy: enforce | log_only
    sa.Column("action", sa.String(40), nullable=False),              # refuse | strip | redact | create | revoke ...
    sa.Column("what", sa.String(300), nullable=False),               # what matched / what changed, never a secret
    sa.Column("before", sa.JSON, nullable=True),                     # admin: the object before and after
    sa.Column("after", sa.JSON, nullable=True),
    sa.Index("ix_audit_at", "at"),
)

policies = sa.Table(  # policy rules made through the admin API (infercloud/policy/book.py); the config's are not here
    "policies", metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("spec", sa.JSON, nullable=False),                      # as posted: PolicySpec's fields
    sa.Column("created_at", sa.DateTime, nullable=False),
)

eval_scores = sa.Table(  # continuous evaluation: one row per score of a sampled answer (infercloud/evaluation/store.py)
    "eval_scores", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime, nullable=False),                    # when the answer was given
    sa.Column("target", sa.String(200), nullable=False),             # the spec's target: a model or a pipeline
    sa.Column("model", sa.String(200), nullable=False),              # the model the answer names
    sa.Column("evaluator", sa.String(64), nullable=False),           # the evaluator's configured name
    sa.Column("value", sa.Float, nullable=False),                    # in [0, 1], higher is better
    sa.Column("passed", sa.Boolean, nullable=False),
    sa.Column("tenant_id", sa.Integer, nullable=True),
    sa.Column("request_id", sa.String(80), nullable=False, index=True),
    sa.Column("detail", sa.String(300), nullable=False),             # short; never the answer's text
    # a judge's score: what its call used (the operator's cost; no tenant is billed); NULL for other evaluators
    sa.Column("judge_prompt_tokens", sa.Integer, nullable=True),
    sa.Column("judge_completion_tokens", sa.Integer, nullable=True),
    sa.Column("judge_device_seconds", sa.Float, nullable=True),
    sa.Index("ix_eval_scores_at", "at"),
    sa.Index("ix_eval_scores_target_evaluator", "target", "evaluator"),
)
