"""Compiled libraries load in an order that works: usearch loaded before torch breaks xgrammar's parsing of
decimal numbers in JSON schemas (a schema's `"maximum": 2.5` is "invalid json schema: stod"), so no server
imports usearch at start; a collection imports it when it first needs a graph (collections/hnsw.py)."""

from __future__ import annotations

import subprocess
import sys


def test_a_server_imports_no_usearch_at_start():
    code = ("import sys, infercloud.cli, infercloud.worker.server, infercloud.cloud; "
            "print('usearch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_usearch_after_torch_leaves_json_schema_numbers_parseable():
    code = """
import json, torch, usearch.index, xgrammar as xgr
from transformers import AutoTokenizer
from infercloud.models.catalog import resolve_model
compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(AutoTokenizer.from_pretrained(
    resolve_model("smollm2-135m-instruct"))))
compiler.compile_json_schema(json.dumps({"type": "object", "properties": {"a": {"type": "number", "maximum": 2.5}}}),
                             any_whitespace=False, strict_mode=True)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
