"""Drives Microsoft's own MSAL for Python against the emulator (called by tests/msal.rs).

Reads a JSON config on stdin, runs the flows, prints one JSON object with what MSAL returned.
The emulator's CA reaches `requests` through REQUESTS_CA_BUNDLE (set by the caller).
"""

import json
import sys

import msal


def app(cfg, credential):
    return msal.ConfidentialClientApplication(
        cfg["client_id"],
        client_credential=credential,
        authority=cfg["authority"],
        validate_authority=False,
        instance_discovery=False,
    )


def main():
    cfg = json.load(sys.stdin)
    out = {"msal_version": msal.__version__}

    # Client credentials with a secret, then the same again (MSAL's cache).
    a = app(cfg, cfg["secret"])
    out["client_credentials"] = a.acquire_token_for_client(scopes=[cfg["cc_scope"]])
    out["client_credentials_again"] = a.acquire_token_for_client(scopes=[cfg["cc_scope"]])

    # A refresh token from elsewhere: MSAL redeems it and caches the account and the new RT.
    out["refresh"] = a.acquire_token_by_refresh_token(cfg["refresh_token"], scopes=[cfg["rt_scope"]])
    accounts = a.get_accounts()
    out["accounts"] = [acc.get("username") for acc in accounts]
    # Silent refresh uses the rotated refresh token MSAL stored (the emulator refuses the old one).
    out["silent"] = (
        a.acquire_token_silent_with_error([cfg["rt_scope"]], account=accounts[0], force_refresh=True)
        if accounts
        else None
    )
    out["silent_again"] = (
        a.acquire_token_silent_with_error([cfg["rt_scope"]], account=accounts[0], force_refresh=True)
        if accounts
        else None
    )

    # An authorization code redeemed for scopes of two resources (the authorize request may name
    # several; the redemption may not).
    out["code_two_resources"] = a.acquire_token_by_authorization_code(
        cfg["code"], scopes=cfg["code_scopes"], redirect_uri=cfg["redirect_uri"]
    )

    # The emulator's errors, as MSAL surfaces them.
    out["bad_secret"] = app(cfg, "wrong-secret").acquire_token_for_client(scopes=[cfg["cc_scope"]])
    out["bad_refresh"] = a.acquire_token_by_refresh_token("not-a-refresh-token", scopes=[cfg["rt_scope"]])

    # Certificate credentials: MSAL signs PS256 with x5t#S256 given the certificate,
    # RS256 with x5t given only a SHA-1 thumbprint.
    cert = cfg["cert"]
    out["cert_ps256"] = app(
        {**cfg, "client_id": cert["client_id"]},
        {"private_key": cert["key_pem"], "public_certificate": cert["cert_pem"]},
    ).acquire_token_for_client(scopes=[cfg["cc_scope"]])
    out["cert_rs256"] = app(
        {**cfg, "client_id": cert["client_id"]},
        {"private_key": cert["key_pem"], "thumbprint": cert["sha1_thumbprint"]},
    ).acquire_token_for_client(scopes=[cfg["cc_scope"]])

    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
