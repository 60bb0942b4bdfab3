"""``tailor``: the command-line client for the common jobs, so nobody hand-writes JSON.

    tailor create topics --file examples.csv          # columns text,label (or labels)
    tailor create topics --descriptions labels.csv --unlabeled texts.txt --kind auto
    tailor add topics --file corrections.csv          # the next version: old examples + these
    tailor suggest topics --file pool.txt -k 20       # what to label next
    tailor predict topics --file texts.txt --out preds.jsonl
    tailor create shoes --images photos/              # image backbones: one sub-folder per label
    tailor predict shoes --images new-photos/         # every PNG/JPEG under the folder
    tailor create digits --audio clips/               # audio backbones: one sub-folder per label
    tailor predict digits --audio new-clips/          # every WAV/FLAC/OGG under the folder
    tailor list | tailor show topics@2 | tailor delete topics [--version 2]
    tailor jobs --status running                      # your training jobs, newest first
    tailor export topics@2 --store ./tailor-store --quantize int8 --out bundles/   # no server

The server address comes from --url or TAILOR_URL (default http://localhost:3000).
Files: .csv (header with text and label/labels columns; labels separated by '|'),
.jsonl (one {"text", "label"|"labels"} object per line), or .txt (one text per line,
predict, suggest and --unlabeled only). Label descriptions: a .json object {label: sentence}
or a .csv with label,description columns. Images (a deployment whose backbone is an image
model): --images DIR, PNG and JPEG files (.png .jpg .jpeg); sound (an audio backbone):
--audio DIR, WAV, FLAC and OGG files (.wav .flac .ogg); sent base64-encoded; for create and
add each sub-folder of DIR is a label and holds its examples.
"""
from __future__ import annotations

import argparse
import base64
import csv
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .client import DEFAULT_URL, Client, TailorAPIError, TailorConnectionError


class CliError(Exception):
    pass


def read_rows(path: Path, text_col: str = "text", label_col: str = "label") -> list[dict[str, Any]]:
    """Examples or inputs from a .csv, .jsonl or .txt file."""
    if not path.exists():
        raise CliError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [{"text": line} for line in path.read_text().splitlines() if line.strip()]
    if suffix == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise CliError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        return rows
    if suffix == ".csv":
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or text_col not in reader.fieldnames:
                raise CliError(f"{path}: needs a header with a {text_col!r} column "
                               f"(found {reader.fieldnames}); use --text-col to pick another")
            rows = []
            for r in reader:
                row: dict[str, Any] = {"text": r[text_col]}
                if label_col in r and r[label_col] is not None:
                    row["label"] = r[label_col]
                elif "labels" in r and r["labels"] is not None:
                    row["labels"] = [v for v in r["labels"].split("|") if v]
                rows.append(row)
            return rows
    raise CliError(f"{path}: unsupported file type {suffix!r}; use .csv, .jsonl or .txt")


def read_descriptions(path: Path) -> dict[str, str]:
    """{label: sentence} from a .json object or a .csv with label,description columns."""
    if not path.exists():
        raise CliError(f"{path}: no such file")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise CliError(f"{path}: not valid JSON ({e.msg})") from None
        if not isinstance(data, dict):
            raise CliError(f"{path}: needs a JSON object {{label: description}}")
        return data
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"label", "description"} <= set(reader.fieldnames):
                raise CliError(f"{path}: needs a header with label and description columns")
            return {r["label"]: r["description"] for r in reader}
    raise CliError(f"{path}: unsupported file type; use .json or .csv")


def read_texts(path: Path, text_col: str = "text") -> list[str]:
    return [r["text"] for r in read_rows(path, text_col)]


@dataclass(frozen=True)
class Media:
    """Items sent as files from a folder: the option (``--images``), the item's field, the
    file suffixes and how the files are called in messages. A modality whose items are files
    is one entry in ``MEDIA``."""

    option: str
    field: str
    suffixes: tuple[str, ...]
    files: str  # "PNG/JPEG"
    things: str  # "images"

    def paths(self, folder: Path) -> list[Path]:
        """The files under ``folder`` (recursively), in a stable order."""
        if not folder.is_dir():
            raise CliError(f"{folder} is not a folder of {self.things}")
        return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in self.suffixes)

    def item(self, path: Path) -> dict[str, str]:
        return {self.field: base64.b64encode(path.read_bytes()).decode("ascii")}

    def examples(self, folder: Path) -> list[dict[str, Any]]:
        """One sub-folder per label, its files the label's examples."""
        if not folder.is_dir():
            raise CliError(f"{folder} is not a folder (expected one sub-folder of {self.things} "
                           "per label)")
        rows = [{**self.item(p), "label": sub.name}
                for sub in sorted(d for d in folder.iterdir() if d.is_dir()) for p in self.paths(sub)]
        if not rows:
            raise CliError(f"no {self.things} in sub-folders of {folder}: put each label's "
                           f"{self.files} files in a sub-folder named after the label")
        return rows


MEDIA = (Media("images", "image", (".png", ".jpg", ".jpeg"), "PNG/JPEG", "images"),
         Media("audio", "audio", (".wav", ".flac", ".ogg"), "WAV/FLAC/OGG", "sound files"))


def media_of(args: argparse.Namespace) -> tuple[Media, Path] | None:
    """The one --images/--audio folder given, if any."""
    given = [(m, getattr(args, m.option)) for m in MEDIA if getattr(args, m.option, None)]
    if len(given) > 1:
        raise CliError(f"give one folder ({' or '.join('--' + m.option for m in MEDIA)}), not several")
    return given[0] if given else None


def training_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """The examples, descriptions and unlabeled texts named on the command line."""
    body: dict[str, Any] = {}
    media = media_of(args)
    if args.file and media:
        raise CliError(f"give examples as --file (texts) or --{media[0].option} (a folder), not both")
    if media:
        body["examples"] = media[0].examples(media[1])
    if args.file:
        body["examples"] = read_rows(args.file, args.text_col, args.label_col)
    if args.descriptions:
        body["label_descriptions"] = read_descriptions(args.descriptions)
    if args.unlabeled:
        body["unlabeled"] = read_texts(args.unlabeled, args.text_col)
    return body


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values parsed as JSON when they are JSON (numbers, lists)."""
    out: dict[str, Any] = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise CliError(f"option {p!r} must look like key=value")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _dump(record: Any) -> dict[str, Any]:
    """A client record as the server sent it (no fields the server left out)."""
    return record.model_dump(mode="json", exclude_unset=True)


def _created(client: Client, record: Any) -> int:
    rec = _dump(record)
    print(json.dumps(rec, indent=2))
    for w in rec.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    if "job" in rec:  # trains in the background (LoRA, unlabeled texts, auto): show progress
        from .cli_lora import JobState, follow_job

        job = follow_job(client.request, rec["job"]["id"])
        return 0 if job.get("status") == JobState.SUCCEEDED else 1
    return 0


def cmd_create(client: Client, args: argparse.Namespace) -> int:
    body = {"name": args.name, "kind": args.kind, **training_inputs(args),
            "options": parse_options(args.option)}
    if "examples" not in body and "label_descriptions" not in body:
        raise CliError("give labeled examples (--file, --images or --audio) or label "
                       "descriptions (--descriptions)")
    return _created(client, client.create_adapter(**body))


def cmd_add(client: Client, args: argparse.Namespace) -> int:
    body = training_inputs(args)
    if not body:
        raise CliError("nothing to add: give --file, --images, --audio, --descriptions or "
                       "--unlabeled")
    if args.kind:
        body["kind"] = args.kind
    if args.option:
        body["options"] = parse_options(args.option)
    return _created(client, client.add_examples(args.name, **body))


def cmd_suggest(client: Client, args: argparse.Namespace) -> int:
    res = client.suggest(args.adapter, read_texts(args.file, args.text_col), args.k)
    for s in res.suggestions:
        print(json.dumps({"adapter": res.adapter, **_dump(s)}))
    return 0


def cmd_predict(client: Client, args: argparse.Namespace) -> int:
    media = media_of(args)
    if media:  # each line names its file (relative to the folder) instead of a text
        m, folder = media
        paths = m.paths(folder)
        if not paths:
            raise CliError(f"no {m.files} files under {folder}")
        shown: list[tuple[str, str]] = [(m.field, p.relative_to(folder).as_posix()) for p in paths]
        load = lambda i: m.item(paths[i])  # noqa: E731  (read one chunk at a time)
    else:
        texts = args.text or [r["text"] for r in read_rows(args.file, args.text_col)]
        shown = [("text", t) for t in texts]
        load = lambda i: texts[i]  # noqa: E731
    out = args.out.open("w") if args.out else sys.stdout
    try:
        for chunk in _chunks(list(range(len(shown))), max(1, args.batch)):
            res = client.predict(args.adapter, [load(i) for i in chunk])
            for i, pred in zip(chunk, res.predictions):
                key, value = shown[i]
                out.write(json.dumps({key: value, "adapter": res.adapter, **_dump(pred)}) + "\n")
    finally:
        if args.out:
            out.close()
    return 0


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    for a in client.list_adapters().adapters:
        acc = a.metrics.get("cv_accuracy", a.metrics.get("cv_f1_micro", "-"))
        print(f"{a.ref:<40} {a.kind:<5} labels={len(a.labels):<3} cv={acc} {a.created_at}")
    return 0


def cmd_show(client: Client, args: argparse.Namespace) -> int:
    print(json.dumps(_dump(client.get_adapter(args.adapter)), indent=2))
    return 0


def cmd_jobs(client: Client, args: argparse.Namespace) -> int:
    """Your jobs, newest first, one JSON line each (every page, up to --limit jobs)."""
    after, left = None, args.limit
    while left > 0:
        page = client.list_jobs(status=args.status, adapter=args.adapter, limit=min(left, 200),
                                after=after)
        for job in page.jobs:
            print(json.dumps(_dump(job)))
        left -= len(page.jobs)
        after = page.next
        if after is None:
            break
    return 0


def cmd_delete(client: Client, args: argparse.Namespace) -> int:
    print(json.dumps(_dump(client.delete_adapter(args.name, args.version or None))))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tailor", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=os.environ.get("TAILOR_URL", DEFAULT_URL),
                    help="server address (env TAILOR_URL)")
    ap.add_argument("--api-key", default=os.environ.get("TAILOR_API_KEY"),
                    help="API key (env TAILOR_API_KEY)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def inputs(p: argparse.ArgumentParser) -> None:
        p.add_argument("--file", type=Path, help="labeled examples (.csv/.jsonl)")
        for m in MEDIA:
            p.add_argument(f"--{m.option}", type=Path, metavar="DIR",
                           help=f"labeled {m.things}: one sub-folder of {m.files} files per label")
        p.add_argument("--descriptions", type=Path,
                       help="label descriptions (.json {label: sentence} or .csv label,description)")
        p.add_argument("--unlabeled", type=Path, help="unlabeled texts (.txt/.csv/.jsonl)")
        p.add_argument("--text-col", default="text")
        p.add_argument("--label-col", default="label")
        p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE")

    c = sub.add_parser("create", help="create an adapter (or a new version) from labeled examples "
                       "and/or label descriptions")
    c.add_argument("name")
    c.add_argument("--kind", default="head",
                   help="adapter kind: head (default), lora, auto, ... (the server lists its kinds)")
    inputs(c)
    c.set_defaults(handler=cmd_create)

    a = sub.add_parser("add", help="publish the next version: the latest version's inputs plus these")
    a.add_argument("name")
    a.add_argument("--kind", help="train the next version as another kind (default: the same)")
    inputs(a)
    a.set_defaults(handler=cmd_add)

    g = sub.add_parser("suggest", help="which texts of a file to label next")
    g.add_argument("adapter", help="name or name@version")
    g.add_argument("--file", required=True, type=Path, help="candidate texts (.txt/.csv/.jsonl)")
    g.add_argument("--text-col", default="text")
    g.add_argument("-k", type=int, default=20, help="how many to suggest (default 20)")
    g.set_defaults(handler=cmd_suggest)

    p = sub.add_parser("predict", help="classify texts (a file, the command line), images or "
                       "sound (a folder)")
    p.add_argument("adapter", help="name or name@version")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", type=Path)
    src.add_argument("--text", action="append")
    for m in MEDIA:
        src.add_argument(f"--{m.option}", type=Path, metavar="DIR", help=f"every {m.files} file under DIR")
    p.add_argument("--text-col", default="text")
    p.add_argument("--batch", type=int, default=64, help="texts, images or clips per request")
    p.add_argument("--out", type=Path, help="write JSON lines here instead of stdout")
    p.set_defaults(handler=cmd_predict)

    sub.add_parser("list", help="list adapters").set_defaults(handler=cmd_list)
    s = sub.add_parser("show", help="show one adapter")
    s.add_argument("adapter")
    s.set_defaults(handler=cmd_show)
    j = sub.add_parser("jobs", help="list your training jobs, newest first (JSON lines)")
    j.add_argument("--status", help="queued, running, succeeded, failed or cancelled")
    j.add_argument("--adapter", help="only jobs creating this adapter")
    j.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    j.set_defaults(handler=cmd_jobs)
    d = sub.add_parser("delete", help="delete an adapter (all versions, or --version)")
    d.add_argument("name")
    d.add_argument("--version", type=int)
    d.set_defaults(handler=cmd_delete)
    from .cli_export import add_export_parser

    add_export_parser(sub)  # works on a store folder, no server
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "export":
        return args.func(args)
    try:
        with Client(args.url, args.api_key) as client:
            return args.handler(client, args)
    except TailorConnectionError as e:
        print(f"tailor: {e.message}", file=sys.stderr)
        return 1
    except (CliError, TailorAPIError) as e:
        print(f"tailor: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
