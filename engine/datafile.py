"""Reading a data file into records that remember their line: JSONL, JSON (a list of objects), CSV/TSV, Parquet, and
plain text (continued pretraining only). No layout knowledge here; engine.data decides what the records mean.

Our own readers rather than `datasets.load_dataset`, because a person needs "line 7" in an error and the `datasets`
JSON loader reports neither lines nor which row broke; it is also ~3 s to import in the UI process. Training still
goes through `datasets` (engine.data.as_dataset).
"""

import codecs
import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

# Streamlit's own server.maxUploadSize defaults to 200 MB; we use the same number for files given by path, so the
# page and the CLI agree. Raise both together: TUNEWISE_MAX_UPLOAD_MB and `streamlit run --server.maxUploadSize`.
DEFAULT_MAX_UPLOAD_MB = 200
DEFAULT_UPLOADS_MB = 1024.0  # each workshop account's uploads in all
EXTENSIONS = {
    ".jsonl": "JSONL",
    ".ndjson": "JSONL",
    ".json": "JSON",
    ".csv": "CSV",
    ".tsv": "CSV",
    ".parquet": "Parquet",
    ".pq": "Parquet",
    ".txt": "text",
    ".md": "text",
}


class DataError(ValueError):
    """A data file that cannot be used; the message is a sentence for a person, `line` the file line if known."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


@dataclass
class FileRecords:
    file_format: str  # JSONL | JSON | CSV | Parquet | text
    records: list = field(default_factory=list)  # (line or None, parsed value)
    line_errors: list = field(default_factory=list)  # (line, message): lines that could not be parsed
    notes: list = field(default_factory=list)  # (line, message): worth a warning, not an error


def max_upload_mb() -> float:
    return _mb_setting("TUNEWISE_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB)


def uploads_mb() -> float:
    """What each workshop account may keep in uploads, in MB (engine.data.save_upload; personal mode: no limit)."""
    return _mb_setting("TUNEWISE_UPLOADS_MB", DEFAULT_UPLOADS_MB)


def _mb_setting(variable: str, default: float) -> float:
    value = os.environ.get(variable, "")
    try:
        return float(value) if value else default
    except ValueError:
        return default


def read_records(path: Path) -> FileRecords:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist or is not a file. Check the path, or upload the file instead.")
    size_mb = path.stat().st_size / 1e6
    if size_mb > max_upload_mb():
        raise DataError(
            f"{path.name} is {size_mb:,.0f} MB, larger than the {max_upload_mb():,.0f} MB limit. "
            "Use a smaller file, or raise the limit with TUNEWISE_MAX_UPLOAD_MB."
        )
    if path.stat().st_size == 0:
        raise DataError(f"{path.name} is empty (0 bytes). Choose the file that holds your examples.")
    kind = EXTENSIONS.get(path.suffix.lower())
    if kind == "Parquet" or (kind is None and _starts_with(path, b"PAR1")):
        return _read_parquet(path)
    text = _decode(path)
    if not text.strip():
        raise DataError(f"{path.name} holds only whitespace, no examples.", line=1)
    if kind is None:  # unknown extension: sniff the first character
        first = text.lstrip()[0]
        kind = "JSON" if first == "[" else "JSONL" if first == "{" else None
        if kind is None:
            raise DataError(
                f"{path.name}: unknown file type '{path.suffix or '(no extension)'}'. "
                "Use .jsonl, .json, .csv or .parquet (or .txt for continued pretraining)."
            )
    if kind == "CSV":
        return _read_csv(text, "\t" if path.suffix.lower() == ".tsv" else None)
    if kind == "text":
        return _read_text(text)
    if kind == "JSON" or text.lstrip().startswith("["):
        try:
            return _read_json_array(text)
        except DataError:
            lines = _read_jsonl(text)  # a .json file that is really JSONL, as many exports write
            if text.lstrip().startswith("[") or lines.line_errors or len(lines.records) < 2:
                raise
            lines.notes.append((None, "The .json file holds one object per line; read it as JSONL."))
            return lines
    return _read_jsonl(text)


def _starts_with(path: Path, magic: bytes) -> bool:
    with open(path, "rb") as f:
        return f.read(len(magic)) == magic


def _decode(path: Path) -> str:
    data = path.read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise DataError(
            f"{path.name} is saved as UTF-16. Save it again as UTF-8 (in Excel: 'CSV UTF-8'; in an "
            "editor: 'Save with encoding' > UTF-8).",
            line=1,
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path.name} is not UTF-8 text: line {line} has the byte 0x{data[e.start]:02x}, which "
            "UTF-8 does not allow (the file is probably Latin-1 or Windows-1252). Save it again as "
            "UTF-8 (in Excel: 'CSV UTF-8'; in an editor: 'Save with encoding' > UTF-8).",
            line=line,
        ) from None


def _read_jsonl(text: str) -> FileRecords:
    out = FileRecords("JSONL")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.records.append((number, json.loads(line)))
        except json.JSONDecodeError as e:
            hint = (
                " A JSONL file holds one complete JSON object per line; this looks like pretty-printed JSON, "
                "so save it as .json (a list of objects) or one object per line."
                if line.strip() in "{["
                else ' Each line must be one complete JSON object, e.g. {"prompt": "...", "completion": "..."}.'
            )
            out.line_errors.append((number, f"not valid JSON ({e.msg} at column {e.colno}).{hint}"))
    return out


def _read_json_array(text: str) -> FileRecords:
    """A JSON list of objects, read element by element so each record keeps the line it starts on."""
    decoder, out = json.JSONDecoder(), FileRecords("JSON")
    start = len(text) - len(text.lstrip())
    if text[start : start + 1] == "{":  # one object: maybe {"data": [...]}, as some exports write
        try:
            whole = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"not valid JSON ({e.msg}, line {e.lineno} column {e.colno}).", line=e.lineno) from None
        lists = [k for k, v in whole.items() if isinstance(v, list)] if isinstance(whole, dict) else []
        if len(lists) == 1 and len(whole) == 1:
            out.records = [(None, r) for r in whole[lists[0]]]
            out.notes.append((None, f"Read the examples from the file's '{lists[0]}' list."))
            return out
        raise DataError(
            "the file holds a single JSON object; it should hold a list of examples "
            "([{...}, {...}]) or one object per line (JSONL).",
            line=1,
        )
    pos, line = start + 1, 1 + text.count("\n", 0, start)
    last = start
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            raise DataError(
                "the JSON list is not closed: the file ends before its final ']'. The file may be "
                "cut short; export it again.",
                line=text.count("\n") + 1,
            )
        if text[pos] == "]":
            break
        line += text.count("\n", last, pos)
        last = pos
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(
                f"not valid JSON ({e.msg}, line {e.lineno} column {e.colno}). Fix that line; a "
                "common cause is a missing comma or quote.",
                line=e.lineno,
            ) from None
        out.records.append((line, value))
    if text[pos + 1 :].strip():
        raise DataError("there is text after the closing ']' of the JSON list.", line=text.count("\n", 0, pos) + 1)
    return out


def _read_csv(text: str, delimiter: str | None) -> FileRecords:
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(text[:4096], delimiters=",;\t").delimiter
        except csv.Error:
            delimiter = ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    out = FileRecords("CSV")
    try:
        header = next(reader)
        names = [h.strip() for h in header]
        if len(set(names)) != len(names) or not all(names):
            raise DataError(
                "the CSV header (line 1) has empty or repeated column names: "
                f"{', '.join(repr(n) for n in names)}. Give every column a distinct name.",
                line=1,
            )
        start = 2
        for values in reader:
            if values and any(v.strip() for v in values):
                if len(values) != len(names):
                    out.line_errors.append(
                        (
                            start,
                            f"has {len(values)} values but the header has {len(names)} "
                            "columns. Quote values that contain the separator or a newline.",
                        )
                    )
                else:
                    out.records.append((start, dict(zip(names, values))))
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(
            f"the CSV file cannot be read near line {reader.line_num}: {e}.", line=reader.line_num
        ) from None
    return out


def _read_parquet(path: Path) -> FileRecords:
    try:
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for damaged files
        raise DataError(
            f"{path.name} is not a readable Parquet file ({str(e).splitlines()[0][:200]}). "
            "Export it again, or use JSONL or CSV."
        ) from None
    return FileRecords("Parquet", records=[(None, r) for r in rows])


def _read_text(text: str) -> FileRecords:
    """Plain text: one document per paragraph (blank-line separated)."""
    out, para, start = FileRecords("text"), [], 1
    for number, line in enumerate(text.splitlines() + [""], start=1):
        if line.strip():
            if not para:
                start = number
            para.append(line)
        elif para:
            out.records.append((start, {"text": "\n".join(para)}))
            para = []
    return out
