"""The collector's OpenAPI 3.1 description (served at ``/openapi.json``; a copy is kept in
``docs/openapi-collector.json`` and a test keeps the two equal)."""

from __future__ import annotations

import copy
from importlib import metadata
from typing import Any

from segmentflow.collector.mapping import STANDARD_TRACKS

_REF = "#/components/schemas/"


def _version() -> str:
    try:
        return metadata.version("segmentflow")
    except metadata.PackageNotFoundError:
        return "0"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


_ID = {
    "type": ["string", "integer", "null"],
    "description": "A string (an integer is turned into its decimal string).",
}
_NON_EMPTY_ID = {"anyOf": [{"type": "string", "minLength": 1}, {"type": "integer"}]}
_OBJECT = {"type": ["object", "null"]}

_COMMON = {
    "type": "object",
    "properties": {
        "userId": {**_ID, "description": "Your id of the user; becomes customer_id when set."},
        "anonymousId": {
            **_ID,
            "description": "Device/visitor id; customer_id when userId is not set.",
        },
        "messageId": {
            **_ID,
            "description": "Unique id of the call; becomes event_id (deduplication key). "
            "Without it the collector derives a stable one from the call's content.",
        },
        "timestamp": {
            "type": ["string", "null"],
            "description": "When the event happened, ISO 8601 / RFC 3339 with an offset. "
            "Defaults to originalTimestamp, else the time received; a value that is not RFC "
            "3339 with an offset is accepted but dead-lettered; one outside the years "
            "1970..2100 or more than max_future_skew (24h) after the collector's clock gets "
            "400.",
        },
        "originalTimestamp": {
            "type": ["string", "null"],
            "description": "Used when timestamp is absent (RudderStack sends only this).",
        },
        "context": {
            **_OBJECT,
            "description": "Segment context; context.page.url and context.traits are read.",
        },
        "integrations": {"description": "Ignored."},
    },
}
_IDENTIFIED = {
    "anyOf": [
        {"type": "object", "required": ["userId"], "properties": {"userId": _NON_EMPTY_ID}},
        {
            "type": "object",
            "required": ["anonymousId"],
            "properties": {"anonymousId": _NON_EMPTY_ID},
        },
    ]
}
_TRACK_FIELDS = {
    "type": "object",
    "required": ["event"],
    "properties": {
        "event": {
            "type": "string",
            "minLength": 1,
            "description": "Event name. Mapped: "
            + ", ".join(f"{k!r} -> {v}" for k, v in STANDARD_TRACKS.items())
            + "; others through SEGMENTFLOW_COLLECTOR_TRACK_MAP, else dead-lettered.",
        },
        "properties": _OBJECT,
    },
}
_IDENTIFY_FIELDS = {"type": "object", "properties": {"traits": _OBJECT}}
_PAGE_FIELDS = {
    "type": "object",
    "properties": {
        "name": {
            "description": "Page name: the url is page:<category>/<name> without a url or path."
        },
        "category": {"description": "Page category (see name)."},
        "properties": {
            **_OBJECT,
            "description": "url (else context.page.url, else path + search) and referrer.",
        },
    },
}
_SCREEN_FIELDS = {
    "type": "object",
    "properties": {
        "name": {
            "description": "Screen name: a page_view with url screen:<name> (or properties.url)."
        },
        "properties": _OBJECT,
    },
}
_GROUP_FIELDS = {
    "type": "object",
    "required": ["groupId"],
    "properties": {
        "groupId": {**_NON_EMPTY_ID, "description": "Becomes the user's trait group_id."},
        "traits": {**_OBJECT, "description": "Each becomes the user's trait group_<name>."},
    },
}
_ALIAS_FIELDS = {
    "type": "object",
    "anyOf": [
        {"required": ["previousId"], "properties": {"previousId": _NON_EMPTY_ID}},
        {"required": ["anonymousId"], "properties": {"anonymousId": _NON_EMPTY_ID}},
    ],
    "properties": {
        "previousId": {
            **_ID,
            "description": "The id merged into userId (alias event's previous_id); defaults "
            "to anonymousId.",
        },
    },
}
_WRITE_KEY = {
    "type": ["string", "null"],
    "description": "The write key, for clients that cannot send an Authorization header.",
}


def _call(fields: str) -> dict[str, Any]:
    return {
        "allOf": [_ref("Common"), _ref("Identified"), _ref(fields)],
        "type": "object",
        "properties": {"writeKey": _WRITE_KEY},
    }


def _batch_call(types: list[str], fields: str | None) -> dict[str, Any]:
    parts: list[Any] = [_ref("Common"), _ref("Identified")]
    if fields:
        parts.append(_ref(fields))
    kind = {"const": types[0]} if len(types) == 1 else {"enum": types}
    parts.append({"type": "object", "required": ["type"], "properties": {"type": kind}})
    return {"allOf": parts}


_SCHEMAS: dict[str, Any] = {
    "Common": _COMMON,
    "Identified": _IDENTIFIED,
    "TrackFields": _TRACK_FIELDS,
    "IdentifyFields": _IDENTIFY_FIELDS,
    "PageFields": _PAGE_FIELDS,
    "ScreenFields": _SCREEN_FIELDS,
    "GroupFields": _GROUP_FIELDS,
    "AliasFields": _ALIAS_FIELDS,
    "Track": _call("TrackFields"),
    "Identify": _call("IdentifyFields"),
    "Page": _call("PageFields"),
    "Screen": _call("ScreenFields"),
    "Group": _call("GroupFields"),
    "Alias": _call("AliasFields"),
    "BatchCall": {
        "anyOf": [
            _batch_call(["track"], "TrackFields"),
            _batch_call(["identify"], "IdentifyFields"),
            _batch_call(["page"], "PageFields"),
            _batch_call(["screen"], "ScreenFields"),
            _batch_call(["group"], "GroupFields"),
            _batch_call(["alias"], "AliasFields"),
        ],
    },
    "Batch": {
        "type": "object",
        "required": ["batch"],
        "properties": {
            "batch": {"type": "array", "items": _ref("BatchCall")},
            "context": {**_OBJECT, "description": "Merged into every call's context."},
            "writeKey": _WRITE_KEY,
            "sentAt": {"description": "Ignored."},
        },
    },
    "Success": {
        "type": "object",
        "required": ["success"],
        "properties": {"success": {"const": True}},
    },
    "Error": {
        "type": "object",
        "required": ["success", "code", "message"],
        "properties": {
            "success": {"const": False},
            "code": {
                "type": "string",
                "description": "Machine code: bad_request, too_deep, out_of_range, "
                "unauthorized, timeout, too_large, unsupported_encoding, overloaded, "
                "unavailable, not_found, method_not_allowed.",
            },
            "message": {"type": "string", "description": "What is wrong."},
            "field": {"type": "string", "description": "The field out of range, if any."},
        },
    },
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


_RESPONSES = {
    "200": {
        "description": "Accepted: every call was produced to its topic or to the dead-letter "
        "topic, and the broker acknowledged it.",
        "content": {"application/json": {"schema": _ref("Success")}},
    },
    "400": _error(
        "The body is not a JSON object of the documented shape, is nested deeper than 64 "
        "levels, or holds money over max_money or a timestamp out of range (nothing produced)."
    ),
    "401": _error("No write key, or one not in SEGMENTFLOW_WRITE_KEYS (checked before parsing)."),
    "408": _error("The body did not arrive within the body timeout (connection closed)."),
    "413": _error("The body (after decompression) is larger than the collector's limit."),
    "415": _error("A Content-Encoding other than gzip."),
    "503": _error(
        "The broker is unreachable or did not acknowledge, or the collector is at its in-flight "
        "byte limit; retry (Segment SDKs do). Some events of the request may already be on "
        "Kafka: the worker applies a repeated messageId (event_id) once, so the retry is safe."
    ),
}

_SUMMARIES = {
    "track": ("Record an action", "Track"),
    "identify": ("Tie a user to their traits", "Identify"),
    "page": ("Record a page view", "Page"),
    "screen": ("Record a mobile screen view (a page_view)", "Screen"),
    "group": ("Tie a user to a group (group_* traits of the user)", "Group"),
    "alias": ("Merge a previous id into a user (alias event)", "Alias"),
    "batch": ("Send several calls at once (what the server-side SDKs use)", "Batch"),
}


def _operation(name: str) -> dict[str, Any]:
    summary, schema = _SUMMARIES[name]
    return {
        "post": {
            "operationId": name,
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(schema)}},
            },
            "responses": copy.deepcopy(_RESPONSES),
        }
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh copy)."""
    paths: dict[str, Any] = {f"/v1/{name}": _operation(name) for name in _SUMMARIES}
    paths["/health"] = {
        "get": {
            "operationId": "health",
            "summary": "Readiness: whether the broker answers",
            "security": [],
            "responses": {
                "200": {
                    "description": "Up, and the broker answers.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["status"],
                                "properties": {
                                    "status": {"const": "ok"},
                                    "broker": {"const": "up"},
                                },
                            }
                        }
                    },
                },
                "503": {
                    "description": "The broker is unreachable (requests get 503 meanwhile).",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["status", "detail"],
                                "properties": {
                                    "status": {"const": "unavailable"},
                                    "broker": {"const": "down"},
                                    "detail": {"type": "string"},
                                },
                            }
                        }
                    },
                },
            },
        }
    }
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "segmentflow collector",
                "version": _version(),
                "description": "Segment-compatible HTTP Tracking API (CONTRACT §9). Point a "
                "Segment (or RudderStack) SDK's host at this server; calls become segmentflow "
                "input events on Kafka. Authenticate with HTTP Basic auth, the write key as the "
                "user name and an empty password, or with writeKey in the body. Bodies may be "
                "gzip-compressed (Content-Encoding: gzip).",
            },
            "security": [{"writeKey": []}],
            "paths": paths,
            "components": {
                "securitySchemes": {
                    "writeKey": {
                        "type": "http",
                        "scheme": "basic",
                        "description": "The write key as user name, empty password.",
                    }
                },
                "schemas": _SCHEMAS,
            },
        }
    )


if __name__ == "__main__":  # python -m segmentflow.collector.openapi > docs/openapi-collector.json
    import json

    print(json.dumps(openapi_document(), indent=2, ensure_ascii=False))
