#!/usr/bin/env python3
"""zeep client for snapgate's SOAP endpoints, driven by the Rust integration tests.

Usage:
  client.py [options] register <base_url> <serviceKey> <vendorId> <encryptedSecret> <ksn>
      Calls SIS RegisterTerminal and prints the TerminalAccessToken.
  client.py [options] authorize-and-capture <base_url> <token> <securePaymentAccountData> <ksn> <amount>
      Calls TPS AuthorizeAndCapture with a b:BankcardTransaction and prints
      {"Status", "StatusCode", "TransactionId", "MaskedPAN", "TerminalAccessToken"}
      as one line of JSON (TerminalAccessToken = renewed token from the SOAP
      header, or null).
  client.py [options] sign-on <base_url> <identityToken>     prints the session token
  client.py [options] ping <base_url>                        prints {"IsSuccess", "Message"}

Options (before or after the command):
  --wsdl-from-server   load <base_url>/2.1.32/{SIS,TPS}.svc?wsdl instead of ../../wsdl/*.wsdl
  --wsdl-mode PATHS    WSDL mode, as gSOAP/Mono/SOAP::Lite use it: load <base_url><path>?wsdl
                       (PATHS = "sis_path,tps_path", e.g. /2.0.19/SvcInfo,/2.0.19/Txn) and call
                       the soap:address the WSDL names; no address is given by us
  --trace              dump the request and response envelopes to stderr

Exit codes: 0 success, 2 usage error, 3 SOAP fault (stdout: "FAULT <detail element
local name> <ErrorID>", "none" when missing), 4 any other error (transport, XML,
schema mismatch; details on stderr).
"""

import argparse
import datetime
import decimal
import json
import os
import sys

import zeep
from lxml import etree
from zeep import xsd
from zeep.exceptions import Error as ZeepError
from zeep.exceptions import Fault
from zeep.plugins import HistoryPlugin, Plugin

HERE = os.path.dirname(os.path.abspath(__file__))
WSDL_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "wsdl"))
API_VERSION = "2.1.32"

NS_SI = "http://schemas.evosnap.com/CWS/v2.0/ServiceInformation"
NS_TP = "http://schemas.evosnap.com/CWS/v2.0/TransactionProcessing"
NS_B = "http://schemas.evosnap.com/CWS/v2.0/Transactions/Bankcard"

SIS_BINDING = "{%s}ServiceInfoProcessing_ICWSServiceInformation" % NS_SI
TPS_BINDING = "{%s}TransactionProcessing_ICwsTransactionProcessing" % NS_TP
BANKCARD_TRANSACTION = "{%s}BankcardTransaction" % NS_B

EXIT_OK = 0
EXIT_FAULT = 3
EXIT_ERROR = 4


def wsdl_location(base_url, svc, from_server):
    if isinstance(from_server, str):
        sis_path, tps_path = from_server.split(",")
        return "%s%s?wsdl" % (base_url.rstrip("/"), sis_path if svc == "SIS" else tps_path)
    if from_server:
        return "%s/%s/%s.svc?wsdl" % (base_url.rstrip("/"), API_VERSION, svc)
    return os.path.join(WSDL_DIR, "%s.wsdl" % svc)


class CapturePlugin(Plugin):
    """With SNAPGATE_CAPTURE_DIR set, keep every reply envelope zeep receives, for the schema
    check of issue 10 (tests/schema/validate.py), as tests/common/capture.rs does for Rust."""

    def __init__(self, folder):
        self.folder = folder
        self.n = 0

    def ingress(self, envelope, http_headers, operation):
        self.n += 1
        name = "zeep-%d-%05d-%s.xml" % (os.getpid(), self.n, getattr(operation, "name", "reply"))
        with open(os.path.join(self.folder, name), "wb") as f:
            f.write(b"<!-- zeep " + str(getattr(operation, "name", "")).encode() + b" -->\n")
            f.write(etree.tostring(envelope))
        return envelope, http_headers


def make_client(base_url, svc, from_server=False, transport=None, plugins=None):
    """Return (client, service proxy bound to <base_url>/2.1.32/<svc>.svc), or in WSDL mode
    (from_server = "sis_path,tps_path") the WSDL's own service at the address it names."""
    if transport is None:
        transport = zeep.Transport(timeout=10, operation_timeout=30)
    plugins = list(plugins or [])
    if os.environ.get("SNAPGATE_CAPTURE_DIR"):
        plugins.append(CapturePlugin(os.environ["SNAPGATE_CAPTURE_DIR"]))
    client = zeep.Client(
        wsdl_location(base_url, svc, from_server), transport=transport, plugins=plugins
    )
    if isinstance(from_server, str):
        return client, client.service
    binding = SIS_BINDING if svc == "SIS" else TPS_BINDING
    address = "%s/%s/%s.svc" % (base_url.rstrip("/"), API_VERSION, svc)
    return client, client.create_service(binding, address)


def now_iso():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def build_bankcard_transaction(
    client,
    secure_payment_account_data,
    ksn,
    amount,
    transaction_datetime=None,
    device_serial_number=None,
    swipe_status=None,
    reference=None,
):
    """A b:BankcardTransaction for an encrypted-MSR card-present sale.

    Absent optional members are sent as xsi:nil, as WCF clients do.
    """
    bankcard_transaction = client.get_type(BANKCARD_TRANSACTION)
    return bankcard_transaction(
        CustomerData=xsd.Nil,
        ReportingData=xsd.Nil,
        Addendum=xsd.Nil,
        ApplicationConfigurationData=xsd.Nil,
        TenderData={
            "PaymentAccountDataToken": xsd.Nil,
            "SecurePaymentAccountData": secure_payment_account_data,
            "EncryptionKeyId": ksn,
            "SwipeStatus": swipe_status,
            "DeviceSerialNumber": device_serial_number,
            "CardData": xsd.Nil,
        },
        TransactionData={
            "Amount": decimal.Decimal(amount),
            "CurrencyCode": "USD",
            "TransactionDateTime": transaction_datetime or now_iso(),
            "Reference": reference,
            "CustomerPresent": "Present",
            "EntryMode": "TrackDataFromMSR",
        },
    )


def authorize_and_capture_kwargs(client, args, transaction_datetime=None):
    return dict(
        sessionToken=args.token,
        transaction=build_bankcard_transaction(
            client,
            args.secure_payment_account_data,
            args.ksn,
            args.amount,
            transaction_datetime=transaction_datetime,
            device_serial_number=args.device_serial_number,
            swipe_status=args.swipe_status,
            reference=args.reference,
        ),
        applicationProfileId=args.application_profile_id,
        merchantProfileId=args.merchant_profile_id,
        workflowId=args.workflow_id,
    )


def fault_summary(fault):
    """(local name of the detail's element, ErrorID text) of a zeep Fault."""
    detail = fault.detail
    if detail is None or not isinstance(detail, etree._Element):
        return "none", "none"
    children = [c for c in detail if isinstance(c.tag, str)]
    if not children:
        return "none", "none"
    elem = children[0]
    error_id = "none"
    for child in elem:
        if isinstance(child.tag, str) and etree.QName(child).localname == "ErrorID":
            error_id = (child.text or "").strip() or "none"
            break
    return etree.QName(elem).localname, error_id


def _decimal(value):
    try:
        decimal.Decimal(value)
    except decimal.InvalidOperation:
        raise argparse.ArgumentTypeError("not a decimal amount: %r" % value)
    return value


def parse_args(argv):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--wsdl-from-server", action="store_true", default=argparse.SUPPRESS)
    common.add_argument("--trace", action="store_true", default=argparse.SUPPRESS)
    common.add_argument("--wsdl-mode", default=argparse.SUPPRESS)

    p = argparse.ArgumentParser(description="zeep client for snapgate", parents=[common])
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("register", parents=[common], help="SIS RegisterTerminal")
    r.add_argument("base_url")
    r.add_argument("service_key")
    r.add_argument("vendor_id")
    r.add_argument("encrypted_secret")
    r.add_argument("ksn")

    a = sub.add_parser("authorize-and-capture", parents=[common], help="TPS AuthorizeAndCapture")
    a.add_argument("base_url")
    a.add_argument("token")
    a.add_argument("secure_payment_account_data")
    a.add_argument("ksn")
    a.add_argument("amount", type=_decimal)
    a.add_argument("--merchant-profile-id", default="MP1")
    a.add_argument("--application-profile-id", default="14560")
    a.add_argument("--workflow-id", default="2317000001")
    a.add_argument("--device-serial-number", default=None)
    a.add_argument("--swipe-status", default=None)
    a.add_argument("--reference", default=None)

    s = sub.add_parser("sign-on", parents=[common], help="SIS SignOnWithToken")
    s.add_argument("base_url")
    s.add_argument("identity_token")

    g = sub.add_parser("ping", parents=[common], help="SIS Ping")
    g.add_argument("base_url")

    args = p.parse_args(argv)
    args.wsdl_from_server = getattr(args, "wsdl_from_server", False)
    args.trace = getattr(args, "trace", False)
    args.wsdl_mode = getattr(args, "wsdl_mode", None)
    if args.wsdl_mode:
        args.wsdl_from_server = args.wsdl_mode
    return args


def _dump_history(history):
    for label, entry in (("request", history.last_sent), ("response", history.last_received)):
        if entry:
            sys.stderr.write("--- %s\n" % label)
            sys.stderr.write(etree.tostring(entry["envelope"], pretty_print=True).decode())


def run(args, transport=None):
    history = HistoryPlugin()
    try:
        if args.command == "register":
            _, service = make_client(args.base_url, "SIS", args.wsdl_from_server, transport, [history])
            token = service.RegisterTerminal(
                serviceKey=args.service_key,
                vendorId=args.vendor_id,
                encryptedSecret=args.encrypted_secret,
                encryptionKeyId=args.ksn,
            )
            if not token:
                raise ZeepError("RegisterTerminalResult is empty")
            print(token)

        elif args.command == "sign-on":
            _, service = make_client(args.base_url, "SIS", args.wsdl_from_server, transport, [history])
            token = service.SignOnWithToken(identityToken=args.identity_token)
            if not token:
                raise ZeepError("SignOnWithTokenResult is empty")
            print(token)

        elif args.command == "ping":
            _, service = make_client(args.base_url, "SIS", args.wsdl_from_server, transport, [history])
            res = service.Ping()
            print(json.dumps({"IsSuccess": res.IsSuccess, "Message": res.Message}))

        elif args.command == "authorize-and-capture":
            client, service = make_client(args.base_url, "TPS", args.wsdl_from_server, transport, [history])
            out = service.AuthorizeAndCapture(**authorize_and_capture_kwargs(client, args))
            # The binding declares an output header, so zeep returns {header, body}.
            res = out.body.AuthorizeAndCaptureResult
            if res is None:
                raise ZeepError("AuthorizeAndCaptureResult is missing")
            renewed = out.header.TerminalAccessToken if out.header is not None else None
            print(
                json.dumps(
                    {
                        "Status": res.Status,
                        "StatusCode": res.StatusCode,
                        "TransactionId": res.TransactionId,
                        "MaskedPAN": getattr(res, "MaskedPAN", None),
                        "TerminalAccessToken": renewed or None,
                    }
                )
            )
        return EXIT_OK

    except Fault as fault:
        name, error_id = fault_summary(fault)
        print("FAULT %s %s" % (name, error_id))
        sys.stderr.write("fault: code=%r string=%r\n" % (fault.code, fault.message))
        return EXIT_FAULT
    except (ZeepError, OSError, ValueError, AttributeError) as exc:
        # zeep errors (TransportError, XMLParseError, ValidationError, ...),
        # requests' connection errors (OSError subclasses) and response shape errors.
        sys.stderr.write("error: %s: %s\n" % (type(exc).__name__, exc))
        return EXIT_ERROR
    finally:
        if args.trace:
            _dump_history(history)


def main(argv=None, transport=None):
    return run(parse_args(argv), transport=transport)


if __name__ == "__main__":
    sys.exit(main())
