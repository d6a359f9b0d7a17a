"""Patch a freshly generated Synapse homeserver.yaml for end-to-end tests.

Run by scripts/synapse.sh with the chroot's own python3, fed on stdin:

    chroot CHROOT python3 - CONFIG PORT SECRET < lib-synapse-config.py

It uses the chroot's python on purpose: that python is guaranteed to have
PyYAML (a hard dependency of Debian's matrix-synapse package), whereas the
host may have no python at all. Every setting is applied unconditionally so
that running it twice gives the same file (start may reuse a data dir).
"""

import os
import sys

import yaml

# Generous enough that no test ever trips a limit, small enough to stay a
# plain integer in every Synapse code path.
LIMIT = {"per_second": 1000, "burst_count": 10000}


def rate_limits():
    """Every rc_* section known to Synapse 1.160, all set to LIMIT.

    Synapse ignores keys it does not know, so an entry for a setting that a
    future version drops is harmless; a setting it adds later simply keeps
    its default.
    """
    flat = [
        "rc_message",
        "rc_registration",
        "rc_registration_token_validity",
        "rc_admin_redaction",
        "rc_joins_per_room",
        "rc_3pid_validation",
        "rc_third_party_invite",
        "rc_media_create",
        "rc_key_requests",
        "rc_delayed_event_mgmt",
        "rc_room_creation",
        "rc_reports",
        "rc_user_directory",
    ]
    nested = {
        "rc_login": ["address", "account", "failed_attempts"],
        "rc_joins": ["local", "remote"],
        "rc_invites": ["per_room", "per_user", "per_issuer"],
        "rc_presence": ["per_user"],
    }
    out = {name: dict(LIMIT) for name in flat}
    for name, subs in nested.items():
        out[name] = {sub: dict(LIMIT) for sub in subs}
    return out


def patch(cfg, port, data_dir, secret):
    # Loopback only and no federation resource: the test homeserver must
    # never be reachable from, or try to talk to, anything off this machine.
    cfg["listeners"] = [
        {
            "port": port,
            "bind_addresses": ["127.0.0.1"],
            "type": "http",
            "tls": False,
            "x_forwarded": True,
            "resources": [{"names": ["client"], "compress": False}],
        }
    ]
    cfg["public_baseurl"] = f"http://127.0.0.1:{port}/"
    cfg["serve_server_wellknown"] = False

    # Open registration so tests can create users with plain CS API calls.
    cfg["enable_registration"] = True
    cfg["enable_registration_without_verification"] = True
    # A known secret lets tests use the shared-secret admin registration API
    # (e.g. to make server admins) without reading any generated file.
    cfg["registration_shared_secret"] = secret
    cfg.pop("registration_shared_secret_path", None)

    # Federation fully off: no key servers to fetch from, no peers allowed.
    cfg["trusted_key_servers"] = []
    cfg["suppress_key_server_warning"] = True
    cfg["federation_domain_whitelist"] = []
    cfg["allow_public_rooms_over_federation"] = False

    # bcrypt's default cost (12) makes every register/login take ~0.25 s of
    # CPU; 4 is the minimum and plenty for throwaway test passwords.
    cfg["bcrypt_rounds"] = 4

    cfg["report_stats"] = False
    cfg["enable_metrics"] = False
    cfg["url_preview_enabled"] = False
    cfg["presence"] = {"enabled": True}

    # SQLite keeps the homeserver self-contained in its data dir, so a fresh
    # start is just "delete the directory".
    cfg["database"] = {
        "name": "sqlite3",
        "args": {"database": os.path.join(data_dir, "homeserver.db")},
    }

    # Log to stderr; synapse.sh redirects that into DATA/synapse.log, so one
    # file holds both early start-up failures and normal logging.
    log_config = os.path.join(data_dir, "log.yaml")
    with open(log_config, "w", encoding="utf-8") as fh:
        yaml.safe_dump(
            {
                "version": 1,
                "formatters": {
                    "precise": {
                        "format": "%(asctime)s %(name)s %(levelname)s %(message)s"
                    }
                },
                "handlers": {
                    "console": {
                        "class": "logging.StreamHandler",
                        "formatter": "precise",
                    }
                },
                # SQL at INFO would dominate the log and slow things down.
                "loggers": {"synapse.storage.SQL": {"level": "WARNING"}},
                "root": {"level": "INFO", "handlers": ["console"]},
                "disable_existing_loggers": False,
            },
            fh,
            sort_keys=False,
        )
    cfg["log_config"] = log_config

    cfg.update(rate_limits())
    return cfg


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: lib-synapse-config.py CONFIG PORT SECRET")
    path, port, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(path, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh) or {}
    patch(cfg, port, os.path.dirname(os.path.abspath(path)), secret)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        yaml.safe_dump(cfg, fh, sort_keys=False)
    # Atomic swap: a half-written config would make Synapse fail confusingly.
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
