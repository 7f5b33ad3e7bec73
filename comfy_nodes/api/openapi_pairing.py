"""The OpenAPI paths and schemas of pairing (pairing/routes.py), for api/openapi.py's document."""

from __future__ import annotations

from .openapi import MS, NOT_FOUND, _json, _nullable, _obj, _op, _path_param, _query, _ref

B64 = {"type": "string", "contentEncoding": "base64"}
Z85_KEY = {"type": "string", "minLength": 40, "maxLength": 40, "description": "a CURVE public key, Z85"}
REFUSED = {
    "403": {"$ref": "#/components/responses/Forbidden"},
    "409": {"$ref": "#/components/responses/Conflict"},
    "410": _json(_ref("Error"), "no usable code: none made, expired, used, or void after its tries"),
    "429": _json(_ref("Error"), "too many attempts from this address (or exchanges open)"),
}
NO_TOKEN = [{}]  # the code is the credential (the site rules still apply)


def schemas() -> dict:
    return {
        "PairedWorker": _obj(
            {
                "public_key": Z85_KEY,
                "name": {"type": ["string", "null"]},
                "paired_at": MS,
                "source": {"type": ["string", "null"]},
                "configured": {"type": "boolean", "description": "also in allowed_worker_keys: stays allowed"},
            }
        ),
        "Farm": _obj(
            {
                "joined": _nullable(JOINED),
                "can_join": {"type": "boolean"},
                "why_not": {"type": ["string", "null"], "description": "why this ComfyUI cannot join a farm"},
            }
        ),
        "PairingOverview": _obj(
            {
                "enabled": {"type": "boolean"},
                "problem": {"type": ["string", "null"], "description": "why this host cannot pair (no CURVE ...)"},
                "fingerprint": {"type": ["string", "null"]},
                "broker_public_key": _nullable(Z85_KEY),
                "code": _nullable(_obj({"expires_at": {"type": "integer"}, "tries_left": {"type": "integer"}})),
                "workers": {"type": "array", "items": _ref("PairedWorker")},
                "refusals": {"type": "array", "items": {"type": "object"}},
            }
        ),
    }


FOUND_HOST = _obj(
    {
        "name": {"type": "string", "maxLength": 64},
        "addresses": {"type": "array", "items": {"type": "string"}, "maxItems": 8},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "fingerprint": {"type": "string", "pattern": "^[0-9a-f]{4}(-[0-9a-f]{4}){3}$"},
        "version": {"type": "string", "maxLength": 64},
        "path": {"type": "string"},
        "instance": {"type": "string", "description": "the DNS-SD instance name (unique on the LAN)"},
        "urls": {"type": "array", "items": {"type": "string"}, "description": "http://address:port, for pairing"},
    }
)


JOINED = _obj(
    {
        "host_url": {"type": "string"},
        "broker": {"type": "string"},
        "fingerprint": {"type": "string"},
        "name": {"type": "string"},
        "paired_at": MS,
        "worker_public_key": Z85_KEY,
    }
)


def farm_paths(p: str) -> dict:
    """A ComfyUI that can be a worker (the worker role, or the default role): joining a farm from its panel."""
    return {
        p + "/farm": {
            "get": _op(
                "getFarm",
                "the farm this ComfyUI joined by pairing, or whether it can join one and why not",
                {"200": _json(_ref("Farm"))},
            )
        },
        p + "/farm/join": {
            "post": _op(
                "joinFarm",
                "pairs with the host at host_url with its code and serves its farm at once, without a restart (admin)",
                {
                    "200": _json(_ref("Farm")),
                    "409": {"$ref": "#/components/responses/Conflict"},
                    "502": _json(_ref("Error"), "the exchange failed (pairing_failed): the host's words; nothing kept"),
                },
                body=_obj(
                    {"host_url": {"type": "string"}, "code": {"type": "string"}},
                    {"name": {"type": "string"}, "fingerprint": {"type": "string"}},
                ),
            )
        },
        p + "/farm/leave": {
            "post": _op(
                "leaveFarm",
                "tells the host (it unpairs this worker's key), deletes the kept keys, stops serving the farm (admin)",
                {
                    "200": _json(
                        _obj({"left": JOINED, "host_told": {"type": "boolean"}, "message": {"type": "string"}})
                    ),
                    "409": {"$ref": "#/components/responses/Conflict"},
                },
            )
        },
    }


def paths(p: str) -> dict:
    return {
        p + "/pairing/discover": {
            "get": _op(
                "discoverHosts",
                "the ComfyMQ hosts advertised on the LAN (mDNS `_comfymq._tcp`): hints, never trusted; any role",
                {
                    "200": _json(
                        _obj({"hosts": {"type": "array", "items": FOUND_HOST, "maxItems": 64}, "timeout": {}})
                    ),
                    "503": _json(_ref("Error"), "mDNS cannot run here (discovery_unavailable)"),
                },
                params=[
                    _query(
                        "timeout", {"type": "number", "minimum": 0.5, "maximum": 10, "default": 3}, "seconds to listen"
                    )
                ],
            )
        },
        p + "/pairing": {
            "get": _op(
                "pairingOverview",
                "paired workers, the active code's state (never the code) and recent refusals (admin)",
                {"200": _json(_ref("PairingOverview"))},
            )
        },
        p + "/pairing/code": {
            "post": _op(
                "makePairingCode",
                "a new one-time code (6 digits, 10 minutes, 5 tries); the one before is void (admin)",
                {
                    "201": _json(
                        _obj({"code": {"type": "string"}, "expires_at": {"type": "integer"}, "fingerprint": {}})
                    ),
                    "409": {"$ref": "#/components/responses/Conflict"},
                },
            )
        },
        p + "/pairing/start": {
            "post": _op(
                "pairingStart",
                "the worker's SPAKE2 message for the host's (no token: the code is the credential)",
                {
                    "200": _json(_obj({"session": {"type": "string"}, "msg": B64, "version": {"type": "integer"}})),
                    **REFUSED,
                },
                body=_obj({"msg": B64}, {"version": {"const": 1}}),
                security=NO_TOKEN,
            )
        },
        p + "/pairing/finish": {
            "post": _op(
                "pairingFinish",
                "the worker's confirmation and key box for the host's (no token: the code is the credential)",
                {"200": _json(_obj({"confirm": B64, "host_key_box": B64})), **REFUSED},
                body=_obj({"session": {"type": "string"}, "confirm": B64, "worker_key_box": B64}),
                security=NO_TOKEN,
            )
        },
        p + "/pairing/leave": {
            "post": _op(
                "pairingLeave",
                "a paired worker leaving, with the leave secret the host sealed for it (no token: the secret is the "
                "credential); its key is unpaired at once",
                {
                    "200": _json(_obj({"left": Z85_KEY, "still_allowed": {"type": "boolean"}})),
                    **REFUSED,
                },
                body=_obj({"public_key": Z85_KEY, "secret": {"type": "string"}}),
                security=NO_TOKEN,
            )
        },
        p + "/pairing/workers/{key}": {
            "delete": _op(
                "unpairWorker",
                "unpairs a worker key at once: its connection is dropped, its jobs go back (admin)",
                {"200": _json(_obj({"unpaired": Z85_KEY, "still_allowed": {"type": "boolean"}})), **NOT_FOUND},
                params=[_path_param("key", {"type": "string", "description": "the Z85 key, URL-encoded"})],
            )
        },
    }
