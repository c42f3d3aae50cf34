#!/usr/bin/env python3
"""Validate SOAP replies against the schemas of our WSDLs (issue 10).

    validate.py DIR      validate every *.xml reply the tests saved in DIR
                         (tests/common/capture.rs, with SNAPGATE_CAPTURE_DIR=DIR)
    validate.py --self-test
                         show the check refuses what the platform's clients refuse

The schemas are the `xs:schema` blocks of wsdl/SIS.wsdl and wsdl/TPS.wsdl, merged by target
namespace (a component declared in both files must be declared identically), so the check is
also a check that what we serve in the WSDL is what we send. They encode the platform's facts:
enumerations (CaptureState, TransactionState, Status, TypeCardType, fault ErrorType) as
xs:simpleType restrictions, nillability (a fault's TransactionState is not nillable), the
namespace of every member, and the declared order. lxml (libxml2) is the validator.

Checked for every reply: the SOAP 1.1 envelope (one Body with one element; a Header holds only
declared header blocks); a Body element that is a global element of our schemas, valid with
its `xsi:type`s; a Fault has faultcode s:Client or s:Server, a faultstring and a detail holding
exactly one element declared as a fault in our WSDLs. IP Commerce-era replies (the response
echoes the request's namespace base) are checked under the evosnap base.
"""
import copy
import os
import sys
import tempfile

from lxml import etree

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WSDLS = [os.path.join(ROOT, "wsdl", "SIS.wsdl"), os.path.join(ROOT, "wsdl", "TPS.wsdl")]
XS = "http://www.w3.org/2001/XMLSchema"
WSDL = "http://schemas.xmlsoap.org/wsdl/"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"


def load_schema():
    """One XMLSchema over every namespace our WSDLs declare, and the set of fault elements."""
    by_ns = {}  # namespace -> {(kind, name): element}
    order = {}  # namespace -> [(kind, name)]
    imports = {}  # namespace -> set of imported namespaces
    prefixes = {}
    faults = set()
    for path in WSDLS:
        doc = etree.parse(path)
        for p, ns in doc.getroot().nsmap.items():
            if p is None:
                continue
            if prefixes.get(p, ns) != ns:
                raise SystemExit(f"prefix {p} means two namespaces across the WSDLs")
            prefixes[p] = ns
        for part in doc.iter("{%s}part" % WSDL):
            if part.get("name") == "detail":
                prefix, local = part.get("element").split(":")
                faults.add("{%s}%s" % (part.nsmap[prefix], local))
        for sch in doc.iter("{%s}schema" % XS):
            tns = sch.get("targetNamespace")
            comps = by_ns.setdefault(tns, {})
            seq = order.setdefault(tns, [])
            for child in sch:
                if not isinstance(child.tag, str):
                    continue
                if child.tag == "{%s}import" % XS:
                    imports.setdefault(tns, set()).add(child.get("namespace"))
                    continue
                key = (etree.QName(child).localname, child.get("name"))
                text = etree.tostring(child, method="c14n", exclusive=True)
                if key in comps:
                    if etree.tostring(comps[key], method="c14n", exclusive=True) != text:
                        raise SystemExit(
                            f"{key[0]} {key[1]} in {tns} differs between the two WSDLs"
                        )
                    continue
                comps[key] = child
                seq.append(key)
    files = {ns: f"ns{i}.xsd" for i, ns in enumerate(sorted(by_ns))}
    tmp = tempfile.mkdtemp(prefix="snapgate-xsd-")
    for ns, comps in by_ns.items():
        nsmap = dict(prefixes)
        nsmap["xs"] = XS
        root = etree.Element(
            "{%s}schema" % XS,
            nsmap=nsmap,
            attrib={"targetNamespace": ns, "elementFormDefault": "qualified"},
        )
        for imp in sorted(imports.get(ns, ())):
            if imp not in files:
                raise SystemExit(f"{ns} imports {imp}, which no WSDL declares")
            etree.SubElement(
                root, "{%s}import" % XS, namespace=imp, schemaLocation=files[imp]
            )
        for key in order[ns]:
            root.append(copy.deepcopy(comps[key]))
        etree.ElementTree(root).write(os.path.join(tmp, files[ns]))
    main = etree.Element("{%s}schema" % XS, nsmap={"xs": XS})
    for ns, f in sorted(files.items()):
        etree.SubElement(main, "{%s}import" % XS, namespace=ns, schemaLocation=f)
    main_path = os.path.join(tmp, "all.xsd")
    etree.ElementTree(main).write(main_path)
    return etree.XMLSchema(etree.parse(main_path)), faults


def evosnap(text):
    return text.replace("http://schemas.ipcommerce.com/", "http://schemas.evosnap.com/")


def elements(e):
    return [c for c in e if isinstance(c.tag, str)]


def check(schema, faults, text):
    """Problems with one reply (an empty list when it is valid)."""
    try:
        doc = etree.fromstring(evosnap(text).encode("utf-8"))
    except etree.XMLSyntaxError as e:
        return [f"not well-formed XML: {e}"]
    if doc.tag != "{%s}Envelope" % SOAP_ENV:
        return [f"the root is {doc.tag}, not a SOAP 1.1 Envelope"]
    parts = elements(doc)
    names = [etree.QName(p).localname for p in parts if etree.QName(p).namespace == SOAP_ENV]
    if len(names) != len(parts) or names not in (["Body"], ["Header", "Body"]):
        return [f"the Envelope holds {names}, not [Header] Body"]
    problems = []
    checked = []
    if names[0] == "Header":
        checked += elements(parts[0])
    body = elements(parts[-1])
    if len(body) != 1:
        return [f"the Body holds {len(body)} elements"]
    payload = body[0]
    if payload.tag == "{%s}Fault" % SOAP_ENV:
        kids = {etree.QName(c).localname: c for c in elements(payload)}
        if [etree.QName(c).localname for c in elements(payload)][:2] != ["faultcode", "faultstring"]:
            problems.append("a Fault starts with faultcode, faultstring")
        code = kids.get("faultcode")
        if code is not None:
            prefix, _, local = (code.text or "").strip().partition(":")
            if code.nsmap.get(prefix) != SOAP_ENV or local not in ("Client", "Server"):
                problems.append(f"faultcode {code.text!r} is not s:Client or s:Server")
        detail = kids.get("detail")
        details = elements(detail) if detail is not None else []
        if len(details) != 1:
            problems.append(f"the fault detail holds {len(details)} elements, not one")
        else:
            if details[0].tag not in faults:
                problems.append(f"{details[0].tag} is not a fault our WSDLs declare")
            checked.append(details[0])
    else:
        checked.append(payload)
    for e in checked:
        tree = etree.ElementTree(copy.deepcopy(e))
        if not schema.validate(tree):
            for err in schema.error_log:
                problems.append(f"{etree.QName(e).localname}: line {err.line}: {err.message}")
    return problems


SELF_TEST = {
    # What the platform's clients refuse, each must be refused here too.
    "nil TransactionState in a fault": """<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>x</faultstring><detail><CWSFault xmlns="http://schemas.evosnap.com/CWS/v2.0/Transactions/Faults" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><ErrorID>326</ErrorID><TransactionState i:nil="true"/></CWSFault></detail></s:Fault></s:Body></s:Envelope>""",
    "CaptureState Undone": """<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><UndoResponse xmlns="http://schemas.evosnap.com/CWS/v2.0/TransactionProcessing"><UndoResult xmlns:i="http://www.w3.org/2001/XMLSchema-instance" xmlns:t="http://schemas.evosnap.com/CWS/v2.0/Transactions" xmlns:bp="http://schemas.evosnap.com/CWS/v2.0/Transactions/Bankcard/Pro" i:type="bp:BankcardTransactionResponsePro"><t:Status>Successful</t:Status><t:CaptureState>Undone</t:CaptureState></UndoResult></UndoResponse></s:Body></s:Envelope>""",
    "Ping members in the wrapper's namespace": """<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><PingResponse xmlns="http://schemas.evosnap.com/Ipc.General.WCF.Contracts.Common"><PingResult><IsSuccess>true</IsSuccess></PingResult></PingResponse></s:Body></s:Envelope>""",
    "an undeclared fault": """<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>x</faultstring><detail><CWSInvalidOperationFault xmlns="http://schemas.evosnap.com/CWS/v2.0/ServiceInformation/Faults"><ErrorID>208</ErrorID></CWSInvalidOperationFault></detail></s:Fault></s:Body></s:Envelope>""",
    "members out of order": """<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><CaptureResponse xmlns="http://schemas.evosnap.com/CWS/v2.0/TransactionProcessing"><CaptureResult xmlns:i="http://www.w3.org/2001/XMLSchema-instance" xmlns:t="http://schemas.evosnap.com/CWS/v2.0/Transactions" xmlns:b="http://schemas.evosnap.com/CWS/v2.0/Transactions/Bankcard" i:type="b:BankcardCaptureResponse"><t:StatusCode>000</t:StatusCode><t:Status>Successful</t:Status></CaptureResult></CaptureResponse></s:Body></s:Envelope>""",
}
SELF_TEST_VALID = """<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><PingResponse xmlns="http://schemas.evosnap.com/Ipc.General.WCF.Contracts.Common"><PingResult xmlns:e="http://schemas.evosnap.com/Ipc.General.WCF.Contracts.Common/External"><e:IsSuccess>true</e:IsSuccess></PingResult></PingResponse></s:Body></s:Envelope>"""


def main(argv):
    schema, faults = load_schema()
    if argv[1:] == ["--self-test"]:
        bad = [name for name, text in SELF_TEST.items() if not check(schema, faults, text)]
        if check(schema, faults, SELF_TEST_VALID):
            bad.append("a valid Ping reply was refused")
        if bad:
            print("schema self-test: accepted what it must refuse:", bad)
            return 1
        print(f"schema self-test: {len(SELF_TEST)} known-bad replies refused, a good one accepted")
        return 0
    if len(argv) != 2:
        print(__doc__)
        return 2
    folder = argv[1]
    names = sorted(n for n in os.listdir(folder) if n.endswith(".xml"))
    relayed = [n for n in names if n.endswith(".relayed.xml")]
    ours = [n for n in names if not n.endswith(".relayed.xml")]
    failed = 0
    for n in ours:
        with open(os.path.join(folder, n), encoding="utf-8") as f:
            text = f.read()
        problems = check(schema, faults, text)
        if problems:
            failed += 1
            if failed <= 20:
                print(f"INVALID {n}: {text.splitlines()[0]}")
                for p in problems[:5]:
                    print(f"    {p}")
    print(
        f"schema: {len(ours) - failed} of {len(ours)} SOAP replies the tests received are valid "
        f"against our WSDLs' schemas ({len(relayed)} relayed from a fake upstream not checked)"
    )
    if not ours:
        print("schema: no replies were captured: is SNAPGATE_CAPTURE_DIR passed to the tests?")
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
