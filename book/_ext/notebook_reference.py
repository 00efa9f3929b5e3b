"""Sphinx extension: the book's library reference, generated from the library notebooks in `nbs/` at every build.

For each notebook with a `#| default_exp` cell, `book/api/<notebook stem>.md` gets the notebook's prose, the
signature, docstring and documented parameters of every exported symbol in the order the notebook defines them, and
the notebook's visible example cells (which are its tests) as code. Nothing is executed: the package is imported to
read signatures and docstrings. `book/api/` is generated (git-ignored) and rewritten only where it changed.
"""
from __future__ import annotations

import ast
import configparser
import importlib
import inspect
import json
import re
from pathlib import Path

BOOK = Path(__file__).resolve().parents[1]
REPO = BOOK.parent
OUT = BOOK / "api"
DIRECTIVE = re.compile(r"^\s*#\|\s*([\w-]+)(.*)$")
FENCE = "````"


def _settings() -> dict:
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(REPO / "settings.ini", encoding="utf-8")
    return dict(cfg["DEFAULT"])


def _directives(src: str) -> dict:
    out = {}
    for line in src.splitlines():
        m = DIRECTIVE.match(line)
        if m: out[m.group(1)] = m.group(2).strip()
    return out


def _strip_directives(src: str) -> str:
    return "\n".join(l for l in src.splitlines() if not DIRECTIVE.match(l)).strip("\n")


def _defined_names(src: str) -> list:
    "Top-level names a code cell defines, in order."
    try: tree = ast.parse(_strip_directives(src))
    except SyntaxError: return []
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): names.append(node.name)
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                names += [n.id for n in ast.walk(t) if isinstance(n, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name): names.append(node.target.id)
    return names


def _signature(name: str, obj) -> str:
    try: sig = str(inspect.signature(obj))
    except (TypeError, ValueError): sig = "(...)"
    kind = "class" if inspect.isclass(obj) else "def"
    text = f"{kind} {name}{sig}"
    if len(text) > 110:  # one parameter per line, as a formatter would
        try:
            params = list(inspect.signature(obj).parameters.values())
            ret = inspect.signature(obj).return_annotation
            tail = "" if ret is inspect.Signature.empty or inspect.isclass(obj) else f" -> {inspect.formatannotation(ret)}"
            text = f"{kind} {name}(\n" + "".join(f"    {p},\n" for p in params) + f"){tail}"
        except (TypeError, ValueError): pass
    return text


def _param_docs(obj) -> dict:
    "Parameter comments in the fastcore `docments` style (`x: int,  # what x is`), where present."
    try:
        from fastcore.docments import docments
        docs = docments(obj, full=False)
    except Exception:
        return {}
    return {k: v for k, v in docs.items() if v and k != "return"}


def _md_escape_table(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _doc_block(name: str, obj, level: int) -> str:
    hashes = "#" * min(level, 6)
    if not (inspect.isclass(obj) or callable(obj)):
        r = repr(obj)
        r = r if len(r) <= 400 else r[:400] + " ..."
        line = f"{name} = {r}"
        try: ast.parse(line); lang = "python"
        except SyntaxError: lang = "text"  # reprs like <class 'KeyError'> are not Python
        return f"{hashes} `{name}`\n\n{FENCE}{lang}\n{line}\n{FENCE}\n"
    out = [f"{hashes} `{name}`\n", f"{FENCE}python\n{_signature(name, obj)}\n{FENCE}\n"]
    doc = inspect.getdoc(obj)
    if doc: out.append(doc.strip() + "\n")
    params = _param_docs(obj)
    if params:
        out.append("| parameter | meaning |\n|---|---|\n" +
                   "".join(f"| `{k}` | {_md_escape_table(v)} |\n" for k, v in params.items()))
    if inspect.isclass(obj):
        methods = []
        for k, v in vars(obj).items():
            if k.startswith("_"): continue
            f = v.fget if isinstance(v, property) else getattr(v, "__func__", v)
            if not callable(f) and not isinstance(v, property): continue
            if not getattr(f, "__module__", "").startswith(obj.__module__): continue
            d = inspect.getdoc(f)
            label = f"`{k}` (property)" if isinstance(v, property) else f"`{k}{_short_sig(f)}`"
            methods.append(f"- {label}" + (f": {d.splitlines()[0]}" if d else ""))
        if methods: out.append("Methods:\n\n" + "\n".join(methods) + "\n")
    return "\n".join(out)


def _short_sig(f) -> str:
    try:
        sig = inspect.signature(f)
        params = [p for p in sig.parameters.values() if p.name not in ("self", "cls")]
        return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))
    except (TypeError, ValueError):
        return "(...)"


def notebook_page(nb_path: Path, settings: dict) -> tuple[str, str, str] | None:
    "`(module, title, markdown)` of one library notebook, or None if it exports no module."
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    cells = nb["cells"]
    module = None
    for c in cells:
        if c["cell_type"] == "code":
            d = _directives("".join(c["source"]))
            if "default_exp" in d: module = d["default_exp"]; break
    if module is None: return None
    modname = f"{settings.get('lib_name', 'crisscross')}.{module}"
    mod = importlib.import_module(modname)
    public = list(getattr(mod, "__all__", []))
    documented, parts, title, level = set(), [], None, 1
    nb_url = f"{settings.get('git_url', '').rstrip('/')}/blob/{settings.get('branch', 'main')}/{nb_path.relative_to(REPO).as_posix()}"
    for c in cells:
        src = "".join(c["source"])
        if c["cell_type"] == "markdown":
            if title is None and src.lstrip().startswith("# "):
                first, _, rest = src.lstrip().partition("\n")
                title = first[2:].strip()
                parts.append(f"# {title}\n\n{rest.strip()}\n\n"
                             f"Module `{modname}`, generated from [`{nb_path.relative_to(REPO).as_posix()}`]({nb_url}); "
                             f"the code cells below are the notebook's examples, which run as its tests.\n")
                continue
            for line in src.splitlines():
                m = re.match(r"^(#{1,6})\s", line)
                if m: level = len(m.group(1))
            parts.append(src.strip() + "\n")
            continue
        if c["cell_type"] != "code" or not src.strip(): continue
        d = _directives(src)
        if "default_exp" in d or "hide" in d or "exporti" in d: continue
        if "export" in d or "exports" in d:
            for name in _defined_names(src):
                if name in public and name not in documented and hasattr(mod, name):
                    parts.append(_doc_block(name, getattr(mod, name), level + 1))
                    documented.add(name)
            continue
        code = _strip_directives(src)
        flags = [k for k in d if k in ("slow", "gpu", "eval:")]
        note = f"*(runs only with the `{'`, `'.join(flags)}` flag)*\n\n" if flags else ""
        parts.append(f"{note}{FENCE}python\n{code}\n{FENCE}\n")
    rest = [n for n in public if n not in documented and hasattr(mod, n)]
    if rest:
        parts.append("## Other exports\n")
        parts += [_doc_block(n, getattr(mod, n), 3) for n in rest]
    return modname, title or modname, "\n".join(parts)


def generate(out: Path = OUT) -> list:
    "Write `out/<stem>.md` for every library notebook and `out/index.md`; return the pages written or kept."
    settings = _settings()
    out.mkdir(parents=True, exist_ok=True)
    pages, rows = [], []
    for nb in sorted((REPO / settings.get("nbs_path", "nbs")).glob("[0-9]*.ipynb")):
        page = notebook_page(nb, settings)
        if page is None: continue
        modname, title, text = page
        target = out / f"{nb.stem}.md"
        _write_if_changed(target, text)
        pages.append(target)
        summary = _summary(nb)
        rows.append(f"| [`{modname}`]({nb.stem}.md) | {_md_escape_table(title)} | {_md_escape_table(summary)} |")
    index = ("# Library reference\n\nGenerated from the library notebooks in `nbs/` at every build of this book: each "
             "page holds a notebook's prose, the signature and docstring of every symbol it exports, and its examples "
             "(which are its tests). The notebooks are the source of truth; `crisscross/*.py` is generated from them "
             "by `nbdev_export`.\n\n| module | notebook | summary |\n|---|---|---|\n" + "\n".join(rows) + "\n")
    _write_if_changed(out / "index.md", index)
    keep = {p.name for p in pages} | {"index.md"}
    for stale in out.glob("*.md"):
        if stale.name not in keep: stale.unlink()
    return pages


def _summary(nb: Path) -> str:
    for c in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
        if c["cell_type"] == "markdown":
            m = re.search(r"^>\s*(.+(?:\n>.*)*)", "".join(c["source"]), re.M)
            if m: return " ".join(l.lstrip("> ").strip() for l in m.group(1).splitlines())
    return ""


def _write_if_changed(path: Path, text: str):
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _on_config_inited(app, config):
    generate()


def setup(app):
    # before sphinx-external-toc (priority 500) reads _toc.yml, whose glob names these pages
    app.connect("config-inited", _on_config_inited, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    for p in generate(): print(p.relative_to(REPO))
