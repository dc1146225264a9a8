"""Microsoft's Graph SDK for Python (msgraph-sdk) against the emulator's change notifications:
create a subscription (the emulator validates the test's receiver meanwhile), read it back, renew
it, delete it, and see a lifetime over the limit refused. Reads its settings as JSON on stdin,
prints what it saw as JSON on stdout."""

import asyncio
import json
import ssl
import sys
import time
from datetime import datetime, timedelta, timezone
from importlib.metadata import version
from urllib.parse import urlparse

import httpx
from azure.core.credentials import AccessToken
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.subscription import Subscription
from msgraph_core import GraphClientFactory


class StaticCredential:
    """A TokenCredential holding a token the test obtained (MSAL is checked elsewhere)."""

    def __init__(self, token):
        self.token = token

    async def get_token(self, *scopes, **kwargs):
        return AccessToken(self.token, int(time.time()) + 3000)

    async def close(self):
        pass

    async def __aenter__(self):
        return self

    async def __aexit__(self, *args):
        pass


def error(e):
    return {"status": e.response_status_code, "code": e.error.code, "message": e.error.message}


async def main(cfg):
    host = urlparse(cfg["graph_url"]).hostname
    auth = AzureIdentityAuthenticationProvider(
        StaticCredential(cfg["token"]),
        scopes=["https://graph.microsoft.com/.default"],
        allowed_hosts=[host],
    )
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(verify=ssl.create_default_context(cafile=cfg["ca"]))
    )
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = cfg["graph_url"]
    client = GraphServiceClient(request_adapter=adapter)
    now = datetime.now(timezone.utc)

    created = await client.subscriptions.post(
        Subscription(
            change_type="created",
            notification_url=cfg["notification_url"],
            lifecycle_notification_url=cfg["lifecycle_url"],
            resource=f"users/{cfg['mailbox']}/mailFolders('inbox')/messages",
            expiration_date_time=now + timedelta(hours=1),
            client_state=cfg["client_state"],
        )
    )
    out = {
        "msgraph_sdk_version": version("msgraph-sdk"),
        "id": created.id,
        "resource": created.resource,
        "change_type": created.change_type,
        "client_state": created.client_state,
        "application_id": created.application_id,
        "expires_in_minutes": round((created.expiration_date_time - now).total_seconds() / 60),
    }
    item = client.subscriptions.by_subscription_id(created.id)
    out["got_notification_url"] = (await item.get()).notification_url
    listed = await client.subscriptions.get()
    out["listed"] = [s.id for s in listed.value]
    renewed = await item.patch(Subscription(expiration_date_time=now + timedelta(hours=2)))
    out["renewed_minutes"] = round((renewed.expiration_date_time - now).total_seconds() / 60)
    try:
        await item.patch(Subscription(expiration_date_time=now + timedelta(days=8)))
        out["too_long"] = None
    except ODataError as e:
        out["too_long"] = error(e)
    # The test delivers a mail and waits for the notification before the subscription goes.
    print(json.dumps(out), flush=True)
    sys.stdin.readline()

    await item.delete()
    after = {}
    try:
        await item.get()
        after["get_after_delete"] = None
    except ODataError as e:
        after["get_after_delete"] = error(e)
    print(json.dumps(after), flush=True)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.stdin.readline())))
