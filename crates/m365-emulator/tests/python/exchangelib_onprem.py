"""exchangelib (EWS client, PyPI) against the emulator standing in for Exchange Server
on-premises: a user name and password by NTLM (requests_ntlm / pyspnego) or Basic, no OAuth.
Reads settings as a JSON line on stdin ({"ews_url", "cases": [{name, auth, username, password,
mailbox}]}), prints one JSON line per case: the inbox subjects, or the error's type."""

import json
import sys
from importlib.metadata import version

from exchangelib import BASIC, DELEGATE, NTLM, Account, Configuration, Credentials, Version
from exchangelib.version import EXCHANGE_2016

AUTH_TYPES = {"NTLM": NTLM, "BASIC": BASIC}


def inbox_subjects(cfg, case):
    config = Configuration(
        service_endpoint=cfg["ews_url"],
        credentials=Credentials(case["username"], case["password"]),
        auth_type=AUTH_TYPES[case["auth"]],
        version=Version(build=EXCHANGE_2016),
    )
    account = Account(case["mailbox"], config=config, autodiscover=False, access_type=DELEGATE)
    return sorted(i.subject for i in account.inbox.all().only("subject"))


def main(cfg):
    print(json.dumps({"exchangelib_version": version("exchangelib"),
                      "requests_ntlm_version": version("requests_ntlm")}), flush=True)
    for case in cfg["cases"]:
        out = {"case": case["name"]}
        try:
            out["subjects"] = inbox_subjects(cfg, case)
        except Exception as e:  # the test compares the error's type
            out["error"] = type(e).__name__
            out["message"] = str(e)[:300]
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.stdin.readline()))
