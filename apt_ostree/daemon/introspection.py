"""The introspection XML of the daemon's three interfaces, as dasbus generates it from the
interface classes; `data/org.aptostree.AptOstree1.xml` is this text (a test keeps them equal).

    python -m apt_ostree.daemon.introspection > data/org.aptostree.AptOstree1.xml
"""

from __future__ import annotations

import xml.dom.minidom
import xml.etree.ElementTree as ET

from apt_ostree.daemon.os_interface import OSInterface
from apt_ostree.daemon.sysroot_interface import SysrootInterface
from apt_ostree.daemon.transaction_interface import TransactionInterface

INTERFACES = (SysrootInterface, OSInterface, TransactionInterface)
DOCTYPE = (
    '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
    ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">'
)


def interfaces_xml() -> str:
    node = ET.Element("node")
    for cls in INTERFACES:
        node.extend(ET.fromstring(cls.__dbus_xml__).findall("interface"))
    text = xml.dom.minidom.parseString(ET.tostring(node)).toprettyxml(indent="  ")
    body = text.split("\n", 1)[1]  # without minidom's <?xml?> line
    return f"{DOCTYPE}\n{body}"


def _direction(member: ET.Element, arg: ET.Element) -> str:
    # signal arguments have no direction in gdbus's introspection, "out" in dasbus's
    return "" if member.tag == "signal" else arg.get("direction", "in")


def members(xml_text: str) -> dict[str, set[tuple[str, str, str]]]:
    """interface -> {(kind, name, signature)}: what two introspections must agree on."""
    out: dict[str, set[tuple[str, str, str]]] = {}
    for iface in ET.fromstring(xml_text).iter("interface"):
        found = set()
        for m in iface:
            if m.tag == "annotation":
                continue
            sig = ",".join(f"{_direction(m, a)}:{a.get('type')}" for a in m.iter("arg"))
            found.add((m.tag, m.get("name", ""), m.get("type") or sig))
        out[iface.get("name", "")] = found
    return out


if __name__ == "__main__":
    print(interfaces_xml(), end="")
