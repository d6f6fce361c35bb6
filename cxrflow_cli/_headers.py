"""The commands a config file's header comment documents: `# run: <command>` lines, in order (fixtures first,
then the cxrflow command that reads the config), and `# smoke: <command words> <options>` lines, options a
quick check adds to the run command starting with those words (tests/test_configs.py, for speed only). A
missing dataset root is reported with the header's own fixture command for it (exact sizes and seed)."""

from __future__ import annotations

import shlex
from pathlib import Path


def _lines(path: Path, key: str) -> list[str]:
    out = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        text = line.strip()
        if text.startswith(f"# {key}:"):
            out.append(text.split(":", 1)[1].strip())
    return out


def run_commands(path: Path) -> list[list[str]]:
    return [shlex.split(c) for c in _lines(path, "run")]


def smoke_options(path: Path) -> list[tuple[list[str], list[str]]]:
    """(command words after `cxrflow`, options) per smoke line."""
    out = []
    for line in _lines(path, "smoke"):
        words = shlex.split(line)
        i = next((k for k, w in enumerate(words) if w.startswith("--")), len(words))
        out.append((words[:i], words[i:]))
    return out


def with_smoke(command: list[str], smoke: list[tuple[list[str], list[str]]]) -> list[str]:
    """`command` plus the smoke options of the first smoke line whose words it starts with (after cxrflow)."""
    for words, options in smoke:
        if command[0] == "cxrflow" and command[1:1 + len(words)] == words:
            return [*command, *options]
    return command


def fixture_command(root: Path | str, headers: list[Path]) -> str | None:
    """The `cxrflow fixtures ... --out ROOT` command of these headers that writes `root`, if one does."""
    want = Path(root)
    for path in headers:
        if not Path(path).is_file():
            continue
        for cmd in run_commands(path):
            if cmd[:2] == ["cxrflow", "fixtures"] and "--out" in cmd:
                out = cmd[cmd.index("--out") + 1]
                if Path(out) == want or Path(out).resolve() == want.resolve():
                    return shlex.join(cmd)
    return None


def with_fixture_hint(exc: Exception, headers: list[Path]) -> Exception:
    """A missing-root error with the header's exact fixture command as its hint (else `exc` unchanged)."""
    from schemas.errors import UserError

    message = getattr(exc, "message", str(exc))
    marker = "source root does not exist: "
    if not isinstance(exc, UserError) or marker not in message:
        return exc
    root = message.split(marker, 1)[1].strip()
    cmd = fixture_command(root, headers)
    if cmd is None:
        return exc
    return type(exc)(message, f"write it first with `{cmd}` (the command in {Path(headers[0]).as_posix()}'s header)")
