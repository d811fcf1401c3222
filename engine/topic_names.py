"""The names of the topics the engine writes, as the shipped topic declarations give them
(``topics/topics.yaml``, by ``role``): read once, here, for the whole package."""

from __future__ import annotations

from .topics import DEFAULT_FILE, load_topics, written_topics

_WRITTEN = written_topics(load_topics(DEFAULT_FILE))

DLQ_TOPIC = _WRITTEN["dead_letters"]  # rejected records, with their reason
CHANGES_TOPIC = _WRITTEN["changes"]  # one record per segment change
MEMBERS_TOPIC = _WRITTEN["members"]  # the compacted table of current memberships
