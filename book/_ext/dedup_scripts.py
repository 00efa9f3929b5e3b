"""Sphinx extension: drop repeated scripts from every page.

With jupyter-book 1.0.4 (sphinx-thebe 0.3.1, sphinx-togglebutton, Sphinx 7.4) the inline configuration scripts of
thebe and togglebutton are added to each page twice (once with filename None, once with ''), and the second
`const THEBE_JS_URL = ...` throws "Identifier 'THEBE_JS_URL' has already been declared" in the browser. Keeping the
first copy of each script removes the error and changes nothing else.
"""


def _key(js):
    if isinstance(js, str): return js
    return (js.filename or "", js.priority, tuple(sorted((k, str(v)) for k, v in js.attributes.items())))


def _dedup(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if scripts:
        seen, kept = set(), []
        for js in scripts:
            if _key(js) not in seen:
                seen.add(_key(js)); kept.append(js)
        context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _dedup, priority=900)  # after the extensions that add per-page scripts
    return {"parallel_read_safe": True, "parallel_write_safe": True}
