#!/usr/bin/python3
"""Oracle for sickle's chat-template engine: render a chat template with Debian's python3-jinja2
set up as transformers' apply_chat_template sets it up (utils/chat_template_utils.py:
_compile_jinja_template / render_jinja_template): ImmutableSandboxedEnvironment with
trim_blocks, lstrip_blocks, loopcontrols and a `generation` block tag, its tojson filter
(json.dumps, ensure_ascii=False, key order kept), raise_exception and strftime_now globals.

usage: render_chat_template.py --template FILE|--config tokenizer_config.json
          --messages conv.json [--tools tools.json] [--no-generation-prompt] [--set k=JSON]...
Prints the prompt exactly (no trailing newline added). Exit 1 with the error on stderr when
the template raises.
"""
import argparse
import json
import sys
from datetime import datetime

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


class Generation(Extension):
    """transformers' AssistantTracker without the tracking: `{% generation %}` renders its body."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


def special_token(v):
    if isinstance(v, dict):
        return v.get("content")
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--template")
    ap.add_argument("--config")
    ap.add_argument("--messages", required=True)
    ap.add_argument("--tools")
    ap.add_argument("--no-generation-prompt", action="store_true")
    ap.add_argument("--set", action="append", default=[])
    a = ap.parse_args()
    context = {}
    if a.config:
        cfg = json.load(open(a.config, encoding="utf-8"))
        for k, v in cfg.items():
            if k.endswith("_token") and k != "add_bos_token":
                context[k] = special_token(v)
        source = cfg["chat_template"]
        if isinstance(source, list):
            named = {t["name"]: t["template"] for t in source}
            source = named["tool_use"] if a.tools and "tool_use" in named else named["default"]
    if a.template:
        source = open(a.template, encoding="utf-8").read()
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    messages = json.load(open(a.messages, encoding="utf-8"))
    tools = json.load(open(a.tools, encoding="utf-8")) if a.tools else None
    for kv in a.set:
        k, _, v = kv.partition("=")
        try:
            context[k] = json.loads(v)
        except ValueError:
            context[k] = v
    try:
        out = env.from_string(source).render(messages=messages, tools=tools, documents=None,
                                             add_generation_prompt=not a.no_generation_prompt, **context)
    except Exception as e:  # the template raised or failed: report, exit 1
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
