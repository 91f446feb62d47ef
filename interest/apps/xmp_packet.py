"""An XMP packet as RDF/XML: read within a size bound, parsed without a DTD, edited in place, written back.

A sidecar is parsed by :mod:`defusedxml` (no DTD, hence no entity expansion
and no external entities; size bounded by :data:`MAX_SIDECAR_BYTES`) into an
ElementTree, edited there (a simple property where it already is, the
package's keywords in a bag, a person's elements left as they are, one
space of indentation a level), and written back with the document's own
namespace prefixes. :mod:`interest.apps.xmp` decides what goes in.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

INTEREST_NS = "https://interest.invalid/ns/xmp/1.0/"  # .invalid never resolves: nobody else can own this name
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NAMESPACES = {  # the prefixes a new sidecar uses; an existing one keeps its own
    "x": "adobe:ns:meta/",
    "rdf": RDF,
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "dc": "http://purl.org/dc/elements/1.1/",
    "lr": "http://ns.adobe.com/lightroom/1.0/",
    "digiKam": "http://www.digikam.org/ns/1.0/",
    "interest": INTEREST_NS,
}
KEYWORD_ROOT = "interest"  # the package's keywords are interest|common, interest|interplay, interest|subjective
MAX_SIDECAR_BYTES = 32 * 2**20  # darktable's longest edit histories are a few MB; anything larger is refused

DESCRIPTION, LI, BAG = f"{{{RDF}}}Description", f"{{{RDF}}}li", f"{{{RDF}}}Bag"
_CONTAINERS = (BAG, f"{{{RDF}}}Seq", f"{{{RDF}}}Alt")


class SidecarError(Exception):
    """A sidecar this run leaves alone: refused (hostile) or unreadable (malformed); the message says which."""


def read_bounded(path: Path) -> bytes:
    """A sidecar's bytes; SidecarError when it is unreadable or over :data:`MAX_SIDECAR_BYTES`."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SIDECAR_BYTES + 1)
    except OSError as exc:
        raise SidecarError(f"unreadable ({exc.strerror or exc})") from None
    if len(data) > MAX_SIDECAR_BYTES:
        raise SidecarError(f"refused: larger than {MAX_SIDECAR_BYTES // 2**20} MiB, left untouched")
    return data


class _Builder(ET.TreeBuilder):
    """A tree builder that also notes each namespace's prefix, so that a person's file keeps its prefixes."""

    def __init__(self) -> None:
        super().__init__()
        self.prefixes: dict[str, str] = {}

    def start_ns(self, prefix: str, uri: str) -> None:  # called by the parser for every xmlns declaration
        self.prefixes.setdefault(uri, prefix)


def parse_packet(data: bytes) -> tuple[ET.Element, dict[str, str]]:
    """A sidecar's tree and prefixes; SidecarError for a DTD (entity bombs, external entities) or bad XML."""
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import DefusedXMLParser

    builder = _Builder()
    # forbid_dtd: XMP has no DTD, and without one there are no entities to expand nor external ones to fetch
    parser = DefusedXMLParser(target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    try:
        parser.feed(data)
        root = parser.close()
    except DefusedXmlException as exc:
        raise SidecarError(f"refused: declares a DTD or entities ({type(exc).__name__}), left untouched") from None
    except ET.ParseError as exc:
        raise SidecarError(f"malformed XML ({exc}), left untouched") from None
    if root.tag != f"{{{NAMESPACES['x']}}}xmpmeta" and root.tag != f"{{{RDF}}}RDF":
        raise SidecarError(f"not an XMP packet (root element {root.tag}), left untouched")
    return root, builder.prefixes


def new_packet() -> ET.Element:
    """An empty packet: x:xmpmeta > rdf:RDF > one rdf:Description."""
    root = ET.Element(f"{{{NAMESPACES['x']}}}xmpmeta", {f"{{{NAMESPACES['x']}}}xmptk": "interest"})
    rdf = append_child(root, ET.Element(f"{{{RDF}}}RDF"), 1)
    append_child(rdf, ET.Element(DESCRIPTION, {f"{{{RDF}}}about": ""}), 2)
    return root


def descriptions_of(root: ET.Element) -> tuple[list[ET.Element], ET.Element]:
    """Every rdf:Description of the packet, and the one the package adds to (the first; made when none)."""
    rdf = root if root.tag == f"{{{RDF}}}RDF" else root.find(f"{{{RDF}}}RDF")
    if rdf is None:
        raise SidecarError("not an XMP packet (no rdf:RDF), left untouched")
    descriptions = rdf.findall(DESCRIPTION)
    if not descriptions:
        descriptions = [append_child(rdf, ET.Element(DESCRIPTION, {f"{{{RDF}}}about": ""}), depth_of(root, rdf) + 1)]
    return descriptions, descriptions[0]


def get_simple(descriptions: list[ET.Element], tag: str) -> str | None:
    """A simple property's value, written as an attribute of a description or as its child element."""
    for desc in descriptions:
        if tag in desc.attrib:
            return desc.attrib[tag]
        child = desc.find(tag)
        if child is not None:
            return (child.text or "").strip()
    return None


def set_simple(descriptions: list[ET.Element], target: ET.Element, tag: str, value: str, depth: int) -> None:
    """Set a simple property where it already is (attribute or element); add it to ``target`` otherwise."""
    for desc in descriptions:
        if tag in desc.attrib:
            desc.set(tag, value)
            return
        child = desc.find(tag)
        if child is not None:
            child.text = value
            return
    element = ET.Element(tag)
    element.text = value
    append_child(target, element, depth)


def remove_simple(descriptions: list[ET.Element], tag: str) -> None:
    """Remove a simple property wherever it is written (attribute or element)."""
    for desc in descriptions:
        desc.attrib.pop(tag, None)
        for child in desc.findall(tag):
            remove_child(desc, child)


def remove_namespace(descriptions: list[ET.Element], uri: str) -> None:
    """Remove every property of namespace ``uri`` (attributes and elements) from the descriptions."""
    prefix = f"{{{uri}}}"
    for desc in descriptions:
        for name in [a for a in desc.attrib if a.startswith(prefix)]:
            del desc.attrib[name]
        for child in [c for c in desc if c.tag.startswith(prefix)]:
            remove_child(desc, child)


def set_keyword(descriptions: list[ET.Element], target: ET.Element, tag: str, keyword: str | None, depth: int) -> None:
    """Replace the package's keywords (``interest|...``) in a bag property; the person's stay as they are."""
    prop = next((d.find(tag) for d in descriptions if d.find(tag) is not None), None)
    if prop is None:
        if keyword is None:
            return
        prop = append_child(target, ET.Element(tag), depth)
    container = next((c for c in prop if c.tag in _CONTAINERS), None)
    if container is None:
        if (prop.text or "").strip() or len(prop):  # not a bag: someone else's form of it, left alone
            return
        container = append_child(prop, ET.Element(BAG), depth + 1)
    for item in [li for li in container.findall(LI) if (li.text or "").startswith(KEYWORD_ROOT + "|")]:
        remove_child(container, item)
    if keyword is not None:
        item = ET.Element(LI)
        item.text = keyword
        append_child(container, item, depth + 2)


def append_child(parent: ET.Element, child: ET.Element, depth: int) -> ET.Element:
    """Append ``child`` at ``depth`` (its indentation, one space a level) following the parent's layout."""
    indent = "\n" + " " * depth
    if len(parent):
        last = parent[-1]
        child.tail = last.tail
        last.tail = parent.text if parent.text is not None and not parent.text.strip() else indent
    else:
        parent.text = indent
        child.tail = "\n" + " " * max(depth - 1, 0)
    parent.append(child)
    return child


def remove_child(parent: ET.Element, child: ET.Element) -> None:
    """Remove ``child``; the last child's tail (the parent's closing indentation) moves to the one before it."""
    children = list(parent)
    index = children.index(child)
    if index == len(children) - 1:
        if index > 0:
            children[index - 1].tail = child.tail
        else:
            parent.text = None
    parent.remove(child)


def depth_of(root: ET.Element, element: ET.Element) -> int:
    """How deep ``element`` is below ``root`` (x:xmpmeta > rdf:RDF > rdf:Description: 2)."""

    def walk(node: ET.Element, d: int) -> int | None:
        if node is element:
            return d
        for c in node:
            found = walk(c, d + 1)
            if found is not None:
                return found
        return None

    return walk(root, 0) or 0


# ---------------------------------------------------------------- writing


def serialize(root: ET.Element, prefixes: dict[str, str]) -> bytes:
    """The packet as UTF-8 XML, every namespace declared once on the root with the document's own prefix."""
    used: dict[str, str] = {}
    taken: set[str] = set()
    known = {uri: prefix for prefix, uri in NAMESPACES.items()}

    def prefix_of(uri: str) -> str:
        if uri not in used:
            prefix = prefixes.get(uri) or known.get(uri) or "ns"
            base, n = prefix, 1
            while prefix in taken:
                prefix, n = f"{base}{n}", n + 1
            used[uri] = prefix
            taken.add(prefix)
        return used[uri]

    def qname(name: str) -> str:
        if name.startswith("{"):
            uri, local = name[1:].split("}", 1)
            return f"{prefix_of(uri)}:{local}"
        return name

    for element in root.iter():  # prefixes in document order, so that the declarations are stable
        qname(element.tag)
        for name in element.attrib:
            qname(name)

    out: list[str] = ['<?xml version="1.0" encoding="UTF-8"?>\n']

    def write(element: ET.Element, is_root: bool) -> None:
        out.append("<" + qname(element.tag))
        if is_root:
            out.extend(f' xmlns:{prefix}="{_escape_attr(uri)}"' for uri, prefix in used.items())
        out.extend(f' {qname(k)}="{_escape_attr(v)}"' for k, v in element.attrib.items())
        if element.text is None and not len(element):
            out.append("/>")
        else:
            out.append(">" + _escape_text(element.text or ""))
            for child in element:
                write(child, False)
            out.append(f"</{qname(element.tag)}>")
        out.append(_escape_text(element.tail or ""))

    write(root, True)
    out.append("\n")
    return "".join(out).encode("utf-8")


def _escape_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_attr(text: str) -> str:
    return (_escape_text(text).replace('"', "&quot;").replace("\n", "&#10;").replace("\r", "&#13;")
            .replace("\t", "&#9;"))
