"""exchangelib (EWS client, PyPI) against the emulator's EWS endpoint over HTTPS: app-only with
impersonation (its own client-credentials request to the emulator's token endpoint), delegated
with a given token, and marking read / deleting under schema versions with and without
SuppressReadReceipts. Reads settings as a JSON line on stdin, prints JSON lines."""

import json
import sys
import time
from importlib.metadata import version

from exchangelib import (
    DELEGATE,
    IMPERSONATION,
    OAUTH2,
    Account,
    Configuration,
    Folder,
    Identity,
    OAuth2AuthorizationCodeCredentials,
    OAuth2Credentials,
    Version,
)
from exchangelib.protocol import close_connections
from exchangelib.version import EXCHANGE_2013, EXCHANGE_2016


class EmulatorCredentials(OAuth2Credentials):
    """exchangelib's app-only credentials, with the emulator's token endpoint."""

    token_endpoint = None

    @property
    def token_url(self):
        return self.token_endpoint


def main(cfg):
    out = {"exchangelib_version": version("exchangelib")}
    EmulatorCredentials.token_endpoint = cfg["token_url"]
    creds = EmulatorCredentials(
        client_id=cfg["client_id"],
        client_secret=cfg["client_secret"],
        tenant_id=cfg["tenant_id"],
        identity=Identity(primary_smtp_address=cfg["shared"]),
    )
    config = Configuration(
        service_endpoint=cfg["ews_url"], credentials=creds, auth_type=OAUTH2, version=Version(build=EXCHANGE_2016)
    )
    account = Account(cfg["shared"], config=config, autodiscover=False, access_type=IMPERSONATION)
    inbox = account.inbox
    out["inbox_name"] = inbox.name
    out["subjects"] = [i.subject for i in inbox.all().only("subject", "is_read").order_by("-datetime_received")]

    changes, state = [], None
    while True:
        # sync_items yields every change of one call; the state says whether more remain.
        batch = list(inbox.sync_items(sync_state=state, only_fields=["subject"], max_changes_returned=2))
        state = inbox.item_sync_state
        changes += [[kind, item.id if hasattr(item, "id") else item[0]] for kind, item in batch]
        if len(batch) < 2:
            break
    out["sync_first"] = changes

    items = list(inbox.all().only("subject", "is_read").order_by("datetime_received"))
    oldest = items[0]
    oldest.is_read = True
    oldest.save(update_fields=["is_read"])
    mime = account.fetch(ids=[items[1]], only_fields=["mime_content"])
    out["mime"] = [m.mime_content.decode() for m in mime]
    out["moved_old_id"] = items[2].id
    items[2].move(to_folder=account.msg_folder_root / "Archive")
    # exchangelib takes the new id from the MoveItem answer.
    out["moved_new_id"] = items[2].id

    changes = list(inbox.sync_items(sync_state=state, only_fields=["subject"]))
    # exchangelib yields (ItemId, is_read) for read flag changes, an ItemId for deletes.
    out["sync_second"] = [
        [kind, item[0].id, item[1]] if isinstance(item, tuple) else [kind, item.id, None] for kind, item in changes
    ]

    new = Folder(parent=inbox, name="Processed")
    new.save()
    out["created_folder"] = new.id is not None
    out["children"] = sorted(f.name for f in inbox.children)
    print(json.dumps(out, default=lambda o: getattr(o, "id", repr(o))), flush=True)

    # Delegated: the robot's own mailbox with a token the test got.
    token = {"access_token": cfg["user_token"], "token_type": "Bearer", "expires_in": 3000,
             "expires_at": time.time() + 3000}
    dcreds = OAuth2AuthorizationCodeCredentials(access_token=token)
    dconfig = Configuration(
        service_endpoint=cfg["ews_url"], credentials=dcreds, auth_type=OAUTH2, version=Version(build=EXCHANGE_2016)
    )
    me = Account(cfg["user"], config=dconfig, autodiscover=False, access_type=DELEGATE)
    print(json.dumps({"delegated_subjects": [i.subject for i in me.inbox.all().only("subject")]}), flush=True)

    # Read receipts: the test delivers mails whose senders ask for one. exchangelib sends
    # SuppressReadReceipts="true" from Exchange 2013 SP1 on and leaves it out before.
    sys.stdin.readline()
    done = []
    for build, read_subject, delete_subject in [
        (EXCHANGE_2013, "Request 50", "Request 52"),
        (EXCHANGE_2016, "Request 51", "Request 53"),
    ]:
        # exchangelib caches one protocol (with its version) per endpoint and credentials.
        close_connections()
        vconfig = Configuration(
            service_endpoint=cfg["ews_url"], credentials=dcreds, auth_type=OAUTH2, version=Version(build=build)
        )
        acct = Account(cfg["user"], config=vconfig, autodiscover=False, access_type=DELEGATE)
        # The emulator refuses FindItem restrictions: pick by subject here.
        items = {i.subject: i for i in acct.inbox.all().only("subject", "is_read")}
        item = items[read_subject]
        item.is_read = True
        item.save(update_fields=["is_read"])
        items[delete_subject].delete()
        done.append(acct.version.api_version)
    print(json.dumps({"receipt_versions": done}), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.stdin.readline()))
