"""Microsoft's Graph SDK for Python (msgraph-sdk) against the emulator: list a folder's messages
page by page and follow delta, as an application would, see an expired delta link refused, and
send a JSON batch whose items are throttled one by one. Reads its settings as JSON on stdin,
prints what it saw as JSON on stdout."""

import asyncio
import json
import ssl
import sys
import time
from importlib.metadata import version
from urllib.parse import urlparse

import httpx
from azure.core.credentials import AccessToken
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.users.item.mail_folders.item.messages.messages_request_builder import (
    MessagesRequestBuilder,
)
from msgraph_core import GraphClientFactory
from msgraph_core.requests.batch_request_content import BatchRequestContent


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
    inbox = client.users.by_user_id(cfg["mailbox"]).mail_folders.by_mail_folder_id("inbox")

    out = {"msgraph_sdk_version": version("msgraph-sdk"), "pages": []}
    query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
        top=2, select=["subject", "isRead", "receivedDateTime"]
    )
    page = await inbox.messages.get(request_configuration=RequestConfiguration(query_parameters=query))
    while True:
        out["pages"].append([m.subject for m in page.value])
        if not page.odata_next_link:
            break
        page = await inbox.messages.with_url(page.odata_next_link).get()

    async def delta_round(link):
        ids, removed = [], []
        resp = await (inbox.messages.delta.with_url(link).get() if link else inbox.messages.delta.get())
        while True:
            for m in resp.value:
                extra = m.additional_data or {}
                if "@removed" in extra:
                    removed.append(m.id)
                else:
                    ids.append(m.id)
            if resp.odata_next_link:
                resp = await inbox.messages.delta.with_url(resp.odata_next_link).get()
            else:
                return ids, removed, resp.odata_delta_link

    ids, _, delta_link = await delta_round(None)
    out["delta_first"] = ids
    # The test changes the mailbox, then the script follows the delta link.
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    ids, removed, delta_link = await delta_round(delta_link)
    out["delta_second"] = ids
    out["delta_removed"] = removed
    print(json.dumps(out), flush=True)

    # The test expires the delta state; the SDK reports what Graph answered to the old link.
    sys.stdin.readline()
    try:
        await delta_round(delta_link)
        print(json.dumps({"expired": None}), flush=True)
    except ODataError as e:
        print(json.dumps({"expired": {"status": e.response_status_code, "code": e.error.code}}), flush=True)

    # The test holds some of this app's concurrency slots on a mailbox; the SDK batches GETs of
    # its inbox and reads each item's own status and headers.
    cmd = json.loads(sys.stdin.readline())
    content = BatchRequestContent()
    other = client.users.by_user_id(cmd["mailbox"]).mail_folders.by_mail_folder_id("inbox").messages
    for _ in range(cmd["items"]):
        # The SDK names each item itself (a GUID).
        content.add_request_information(other.to_get_request_information())
    answer = await client.batch.post(content)
    items = {}
    for rid, item in answer.responses.items():
        headers = {k.lower(): v for k, v in (item.headers or {}).items()}
        items[rid] = {"status": item.status, "retry_after": headers.get("retry-after")}
    print(json.dumps({"batch": items}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.stdin.readline())))
