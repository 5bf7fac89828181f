"""`rlm-desktop provider …`: list, add, remove provider profiles and manage their keyring keys headless.

The key of ``set-key`` is read from standard input when it is not a terminal, otherwise from a hidden
prompt; never from an argument (arguments end up in shell history and process lists).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from typing import Any

from rlm_desktop.cli.exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_PROVIDER, EXIT_USAGE
from rlm_desktop.core.profiles import env_var_for
from rlm_desktop.core.redact import mask_url
from rlm_desktop.core.textsafe import for_stream, for_terminal, json_for_terminal


def add_parser(subparsers: Any) -> None:
    from rlm_desktop.core.profiles import PRESETS

    p = subparsers.add_parser(
        "provider", help="manage provider profiles and their keys (OS keyring)",
        description="Provider profiles: any OpenAI-compatible server. Keys live only in the OS keyring "
                    "(service 'rlm-desktop', user = the profile id). Key order when running: "
                    "RLM_DESKTOP_KEY_<ID>, OPENAI_API_KEY (OpenAI's own server only), the keyring.")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    ls = sub.add_parser("list", help="list the profiles and where each key comes from")
    ls.add_argument("--json", action="store_true", help="one JSON array (no keys, ever)")
    ls.set_defaults(handler=_list)

    add = sub.add_parser("add", help="add a profile from a preset")
    add.add_argument("id", metavar="ID", help="short id: lower-case letters, digits, '-', '_'")
    add.add_argument("--preset", required=True, choices=list(PRESETS), metavar="PRESET",
                     help="one of: " + ", ".join(PRESETS))
    add.add_argument("--base-url", metavar="URL", help="server address (required for custom)")
    add.add_argument("--name", metavar="N", help="display name")
    add.add_argument("--model", metavar="M", help="default root model")
    add.add_argument("--sub-model", metavar="M", help="default sub-call model (default: --model)")
    keyg = add.add_mutually_exclusive_group()
    keyg.add_argument("--no-key", action="store_true", help="the server needs no key (none is sent)")
    keyg.add_argument("--needs-key", action="store_true", help="the server needs a key")
    add.set_defaults(handler=_add)

    rm = sub.add_parser("remove", help="remove a profile and its keyring key")
    rm.add_argument("id", metavar="ID")
    rm.add_argument("--keep-key", action="store_true", help="leave the key in the keyring")
    rm.set_defaults(handler=_remove)

    sk = sub.add_parser("set-key", help="store the profile's key in the OS keyring (read from stdin "
                        "or a hidden prompt)")
    sk.add_argument("id", metavar="ID")
    sk.set_defaults(handler=_set_key)

    dk = sub.add_parser("delete-key", help="delete the profile's key from the OS keyring")
    dk.add_argument("id", metavar="ID")
    dk.set_defaults(handler=_delete_key)

    t = sub.add_parser("test", help="test the connection and the key")
    t.add_argument("id", metavar="ID")
    t.add_argument("--timeout", type=float, default=10.0, metavar="S")
    t.set_defaults(handler=_test)

    m = sub.add_parser("models", help="list the models the server offers")
    m.add_argument("id", metavar="ID")
    m.add_argument("--timeout", type=float, default=10.0, metavar="S")
    m.add_argument("--save", action="store_true", help="store the list in the profile")
    m.set_defaults(handler=_models)


def _err(msg: str) -> None:
    # Messages quote servers (errors, model names): their control characters are shown, not run.
    print(f"rlm-desktop provider: {for_terminal(msg)}", file=sys.stderr, flush=True)


def _out(text: str) -> None:
    """A line for stdout: exact into a pipe, control characters made visible on a terminal."""
    print(for_stream(text, sys.stdout), flush=True)


def _settings() -> Any:
    from rlm_desktop.session.prefs import Preferences as Settings

    s = Settings()
    for n in s.notices:
        _err(n)
    return s


def _list(args: argparse.Namespace) -> int:
    from rlm_desktop.session import secrets

    s = _settings()
    status = secrets.keyring_status()
    rows = []
    for p in s.providers():
        if p.is_demo:
            key = "none needed (offline demo)"
        elif not p.needs_key:
            key = "none needed"
        else:
            r = secrets.resolve_key(p)
            key = secrets.describe_source(r) if r.found else "MISSING"
        rows.append({"id": p.id, "name": p.name, "preset": p.preset, "base_url": mask_url(p.base_url),
                     "root_model": p.root_model, "sub_model": p.sub_model, "key": key,
                     "demo": p.is_demo})
    if args.json:
        print(json_for_terminal(json.dumps(rows, ensure_ascii=False)))
        return EXIT_OK
    w = max(len(r["id"]) for r in rows)
    for r in rows:
        models = r["root_model"] + (f" / {r['sub_model']}" if r["sub_model"] != r["root_model"] else "")
        _out(f"{r['id']:<{w}}  {r['name']}  {r['base_url']}  models: {models or '-'}  key: {r['key']}")
    if not status.available:
        _err(status.message)
    if not s.has_real_provider():
        _err("only the offline demo is configured: add a server with "
             "`rlm-desktop provider add ID --preset PRESET [--base-url URL]`")
    return EXIT_OK


def _add(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rlm_desktop.core.profiles import PRESETS, ProfileError, profile_from_preset
    from rlm_desktop.session.prefs import SettingsError

    s = _settings()
    if args.preset == "custom" and not args.base_url:
        _err("--base-url is required with --preset custom (e.g. https://gateway.example.com/v1)")
        return EXIT_USAGE
    try:
        prof = profile_from_preset(args.preset, args.id, name=args.name, base_url=args.base_url,
                                   root_model=args.model, sub_model=args.sub_model or args.model)
        if args.no_key:
            prof = replace(prof, needs_key=False)
        elif args.needs_key:
            prof = replace(prof, needs_key=True)
        s.add_profile(prof)
    except (ProfileError, SettingsError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    hint = PRESETS[args.preset].hint
    _out(f"added provider {prof.id!r} ({prof.name}, {mask_url(prof.base_url)})")
    if hint:
        print(hint)
    if prof.needs_key:
        print(f"next: store its key with `rlm-desktop provider set-key {prof.id}` (read from stdin or a "
              "hidden prompt)")
    if not prof.root_model:
        print(f"no default model yet: see `rlm-desktop provider models {prof.id}`, then pass --model to run")
    return EXIT_OK


def _remove(args: argparse.Namespace) -> int:
    from rlm_desktop.session import secrets
    from rlm_desktop.session.prefs import SettingsError

    s = _settings()
    try:
        s.remove_profile(args.id)
    except SettingsError as exc:
        _err(str(exc))
        return EXIT_USAGE
    print(f"removed provider {args.id!r}")
    if not args.keep_key:
        try:
            if secrets.delete_key(args.id):
                print("its key was deleted from the keyring")
        except secrets.SecretsError as exc:
            _err(f"the profile is gone but its key could not be deleted: {exc}")
            return EXIT_FAILURE
    return EXIT_OK


def _read_key(profile_id: str) -> str:
    if sys.stdin is None:
        return ""
    if sys.stdin.isatty():
        return getpass.getpass(f"API key for {profile_id} (input hidden): ")
    data = sys.stdin.read()
    lines = [ln.strip() for ln in data.splitlines() if ln.strip()]
    return lines[0] if len(lines) == 1 else ("\n".join(lines) if lines else "")


def _set_key(args: argparse.Namespace) -> int:
    from rlm_desktop.session import secrets
    from rlm_desktop.session.prefs import SettingsError

    s = _settings()
    try:
        prof = s.profile(args.id)
    except SettingsError as exc:
        _err(str(exc))
        return EXIT_USAGE
    if prof.is_demo:
        _err("the offline demo needs no key")
        return EXIT_USAGE
    status = secrets.keyring_status()
    if not status.available:
        var = env_var_for(prof.id)
        _err(status.message.replace("RLM_DESKTOP_KEY_<ID>", var))
        _err(f"From the command line, set {var} in the environment of `rlm-desktop run --provider "
             f"{prof.id}` (a session-only key exists only inside the desktop app).")
        return EXIT_FAILURE
    try:
        key = _read_key(prof.id)
    except (EOFError, KeyboardInterrupt):
        _err("no key entered: nothing was stored")
        return EXIT_USAGE
    if not key.strip():
        _err("no key given on standard input or at the prompt: nothing was stored")
        return EXIT_USAGE
    if "\n" in key:
        _err("standard input held several lines: give only the key")
        return EXIT_USAGE
    try:
        secrets.set_key(prof.id, key)
    except secrets.SecretsError as exc:
        _err(str(exc))
        return EXIT_FAILURE
    print(f"key for {prof.id!r} stored in the keyring ({status.backend}): {secrets.mask(key.strip())}")
    if not prof.needs_key:
        print("note: this profile is set to need no key, so the key is not sent; re-add it with "
              "--needs-key to use it")
    return EXIT_OK


def _delete_key(args: argparse.Namespace) -> int:
    from rlm_desktop.session import secrets

    try:
        found = secrets.delete_key(args.id)
    except secrets.SecretsError as exc:
        _err(str(exc))
        return EXIT_FAILURE
    print(f"key for {args.id!r} deleted from the keyring" if found else f"no key stored for {args.id!r}")
    return EXIT_OK


def _probe(args: argparse.Namespace, which: str) -> tuple[Any, Any, int]:
    from rlm_desktop.engine import connection
    from rlm_desktop.session import secrets
    from rlm_desktop.session.prefs import SettingsError

    s = _settings()
    try:
        prof = s.profile(args.id)
    except SettingsError as exc:
        _err(str(exc))
        return None, None, EXIT_USAGE
    resolved = secrets.resolve_key(prof)
    if prof.needs_key and not resolved.found:
        envs = " or ".join(secrets.env_vars_for(prof))
        _err(f"no key for provider {prof.id!r}: set one with `rlm-desktop provider set-key {prof.id}` or "
             f"{envs}" + (f" ({resolved.note})" if resolved.note else ""))
        return s, prof, EXIT_USAGE
    fn = connection.test_connection if which == "test" else connection.fetch_models
    res = asyncio.run(fn(prof, resolved.key, timeout_s=args.timeout))
    return s, (prof, res), EXIT_OK


def _test(args: argparse.Namespace) -> int:
    _s, out, code = _probe(args, "test")
    if code != EXIT_OK:
        return code
    _prof, res = out
    if res.ok:
        _out(res.message)
        return EXIT_OK
    _err(res.message)
    return EXIT_PROVIDER


def _models(args: argparse.Namespace) -> int:
    from dataclasses import replace

    s, out, code = _probe(args, "models")
    if code != EXIT_OK:
        return code
    prof, res = out
    if not res.ok:
        _err(res.message)
        return EXIT_PROVIDER
    for m in res.models:
        _out(m)
    print(for_terminal(res.message), file=sys.stderr)
    if args.save and not prof.is_demo:
        # List prices need no copy: the profile looks them up (genai-prices) for every model.
        s.save_profile(replace(prof, models=tuple(res.models)))
        print(f"saved {len(res.models)} models in profile {prof.id!r}", file=sys.stderr)
    return EXIT_OK
