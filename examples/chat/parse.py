"""Turns a chat message into a structured node list, the form the page renders.

Node types (every field is plain text; a renderer must treat it as text, never as markup):
  {"type": "text", "text"}                      plain text, verbatim
  {"type": "mention", "user", "name", "href"}   @user, for a known user only
  {"type": "link", "href", "text"}              an http(s) URL
  {"type": "image", "src", "alt"}               an http(s) URL ending in an image extension

`to_html` renders nodes as HTML with every piece of user text escaped, for consumers that want
markup (an e-mail digest, a search index); the chat page builds DOM nodes with textContent instead.

>>> users = {"ann": "Ann", "bob": "Bob"}
>>> parse("hi @ann and @nobody, see https://example.com/a?b=1.", users)  # doctest: +NORMALIZE_WHITESPACE
[{'type': 'text', 'text': 'hi '},
 {'type': 'mention', 'user': 'ann', 'name': 'Ann', 'href': '/users/ann'},
 {'type': 'text', 'text': ' and @nobody, see '},
 {'type': 'link', 'href': 'https://example.com/a?b=1', 'text': 'https://example.com/a?b=1'},
 {'type': 'text', 'text': '.'}]
>>> parse("look http://x.test/cat.PNG", users)[1]
{'type': 'image', 'src': 'http://x.test/cat.PNG', 'alt': 'cat.PNG'}
>>> parse("<script>alert(1)</script>", users)
[{'type': 'text', 'text': '<script>alert(1)</script>'}]
>>> to_html(parse('<b>hi</b> @bob "x" javascript:alert(1) http://e.test/?q=<a>', users))
'&lt;b&gt;hi&lt;/b&gt; <a class="mention" href="/users/bob">@Bob</a> &quot;x&quot; javascript:alert(1) <a href="http://e.test/?q=">http://e.test/?q=</a>&lt;a&gt;'
>>> mentioned(parse("@bob @ann @bob", users))
['bob', 'ann']
"""

from __future__ import annotations

import html
import re

# A URL runs to whitespace or a character that cannot be in one unescaped; trailing punctuation
# ("see http://x.test/a.") belongs to the sentence, not to the URL.
_TOKEN = re.compile(r"(?P<url>https?://[^\s<>\"'`]+)|(?P<mention>(?<![\w@])@(?P<user>[a-z][a-z0-9_]{0,31}))")
_TRAILING = ".,;:!?)]}'\""
_IMAGE = re.compile(r"\.(png|jpe?g|gif|webp|svg)$", re.IGNORECASE)

Node = dict[str, str]


def parse(text: str, users: dict[str, str]) -> list[Node]:
    """The node list of `text`; `users` maps the ids that can be mentioned to display names."""
    nodes: list[Node] = []

    def add_text(t: str) -> None:
        if not t:
            return
        if nodes and nodes[-1]["type"] == "text":
            nodes[-1]["text"] += t
        else:
            nodes.append({"type": "text", "text": t})

    pos = 0
    for m in _TOKEN.finditer(text):
        add_text(text[pos:m.start()])
        pos = m.end()
        if m.group("url"):
            url = m.group("url")
            cut = len(url)
            while cut > 0 and url[cut - 1] in _TRAILING:
                cut -= 1
            url, rest = url[:cut], url[cut:]
            if len(url) <= len("https://"):
                add_text(url + rest)
                continue
            path = url.split("?", 1)[0].split("#", 1)[0]
            if _IMAGE.search(path):
                nodes.append({"type": "image", "src": url, "alt": path.rsplit("/", 1)[-1]})
            else:
                nodes.append({"type": "link", "href": url, "text": url})
            add_text(rest)
        else:
            user = m.group("user")
            if user in users:
                nodes.append({"type": "mention", "user": user, "name": users[user], "href": f"/users/{user}"})
            else:
                add_text(m.group(0))
    add_text(text[pos:])
    return nodes


def mentioned(nodes: list[Node]) -> list[str]:
    """The users mentioned, each once, in order."""
    seen: list[str] = []
    for node in nodes:
        if node["type"] == "mention" and node["user"] not in seen:
            seen.append(node["user"])
    return seen


def to_html(nodes: list[Node]) -> str:
    """HTML for the nodes, every piece of user text escaped (attribute values too)."""
    e = lambda s: html.escape(s, quote=True)  # noqa: E731
    out = []
    for n in nodes:
        if n["type"] == "text":
            out.append(e(n["text"]))
        elif n["type"] == "mention":
            out.append(f'<a class="mention" href="{e(n["href"])}">@{e(n["name"])}</a>')
        elif n["type"] == "link":
            out.append(f'<a href="{e(n["href"])}">{e(n["text"])}</a>')
        elif n["type"] == "image":
            out.append(f'<img src="{e(n["src"])}" alt="{e(n["alt"])}">')
    return "".join(out)


def summary(nodes: list[Node]) -> str:
    """Plain text of the nodes (mentions as @name), e.g. for a notification line."""
    parts = {"text": lambda n: n["text"], "mention": lambda n: "@" + n["name"],
             "link": lambda n: n["text"], "image": lambda n: n["src"]}
    return "".join(parts[n["type"]](n) for n in nodes)

