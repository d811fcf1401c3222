"""The pure parts of ``segengine run --processes N``: the children's /metrics pages merged into
the set's (real pages of real ``Metrics`` bundles), each child's environment, the set's
/readyz, and which exit codes a stop by a signal accepts."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from segengine.metrics import MergedPages, Metrics, exposition, merge_pages
from segengine.processes import ChildHealth, child_env, clean_exit, exit_reason, readiness
from segengine.settings import Settings, settings_problems

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def page(m: Metrics) -> str:
    """The page a worker process serves on /metrics when the supervisor scrapes it."""
    return m.exposition(OPENMETRICS)[0].decode()


def samples(text: str) -> Samples:
    """Every sample of an OpenMetrics page, parsed strictly."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in openmetrics_families(text) for s in f.samples}


def merged_page(*pages: str) -> str:
    body, content_type = exposition(MergedPages(pages), OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text")
    return body.decode()


def two_workers() -> tuple[Metrics, Metrics]:
    a, b = Metrics(CollectorRegistry(), process=False), Metrics(CollectorRegistry(), process=False)
    for m in (a, b):
        m.rules_info.info({"version": "rules@1"})
    return a, b


def test_counters_are_summed_per_series_and_a_series_of_one_process_is_kept() -> None:
    a, b = two_workers()
    a.events.labels("events.purchase", "purchase", "applied").inc(1200)
    b.events.labels("events.purchase", "purchase", "applied").inc(800)
    b.events.labels("events.browse", "browse", "applied").inc(7)
    a.dlq.labels("not_json").inc(2)
    got = samples(merged_page(page(a), page(b)))
    applied = (("outcome", "applied"), ("topic", "events.purchase"), ("type", "purchase"))
    assert got[("segengine_events_total", applied)] == 2000
    assert (
        got[("segengine_events_total", (("outcome", "applied"), ("topic", "events.browse"), ("type", "browse")))] == 7
    )
    assert got[("segengine_dlq_total", (("code", "not_json"),))] == 2
    assert got[("segengine_rules_reloads_total", (("outcome", "refused"),))] == 0


def test_histograms_are_summed_bucket_by_bucket_with_count_and_sum() -> None:
    a, b = two_workers()
    for seconds in (0.003, 0.02, 0.7):
        a.batch_seconds.observe(seconds)
    for seconds in (0.02, 20.0):
        b.batch_seconds.observe(seconds)
    a.redis_latency.labels("load").observe(0.0002)
    b.redis_latency.labels("save").observe(0.002)
    text = merged_page(page(a), page(b))
    got = samples(text)

    def bucket(le: str) -> float:
        return got[("segengine_batch_seconds_bucket", (("le", le),))]

    assert [bucket(le) for le in ("0.001", "0.005", "0.025", "1.0", "10.0", "+Inf")] == [0, 1, 3, 4, 4, 5]
    assert got[("segengine_batch_seconds_count", ())] == 5
    assert got[("segengine_batch_seconds_sum", ())] == pytest.approx(20.743)
    # a labelled histogram child that only one process has is served whole, its buckets in order
    (family,) = [f for f in openmetrics_families(text) if f.name == "segengine_redis_command_seconds"]
    for command in ("load", "save"):
        les = [
            float(s.labels["le"])
            for s in family.samples
            if s.name.endswith("_bucket") and s.labels["command"] == command
        ]
        assert les == sorted(les) and les[-1] == float("inf")
        assert got[("segengine_redis_command_seconds_count", (("command", command),))] == 1


def test_gauges_sum_what_each_process_owns_and_take_one_copy_of_what_they_share() -> None:
    a, b = two_workers()
    a.timer_backlog.set(30)  # due customers of each one's own partitions: the set's is the sum
    b.timer_backlog.set(12)
    a.set_consumer_lag({("events.purchase", 0): 5, ("events.purchase", 1): 0})
    b.set_consumer_lag({("events.purchase", 3): 9})
    for m in (a, b):  # read from Redis: every process reports the same count
        m.set_population({"lifecycle": {"active": 250, "churned": 40}})
    got = samples(merged_page(page(a), page(b)))
    assert got[("segengine_timer_backlog", ())] == 42
    lag = {
        dict(labels)["partition"]: v for (name, labels), v in got.items() if name == "segengine_consumer_lag_records"
    }
    assert lag == {"0": 5, "1": 0, "3": 9}
    assert got[("segengine_segment_population", (("dimension", "lifecycle"), ("segment", "active")))] == 250
    assert got[("segengine_segment_population", (("dimension", "lifecycle"), ("segment", "churned")))] == 40


def test_build_info_and_rules_info_are_one_series_per_version_even_while_processes_differ() -> None:
    a, b = two_workers()
    got = samples(merged_page(page(a), page(b)))
    assert got[("segengine_rules_info", (("version", "rules@1"),))] == 1
    build = {dict(labels)["rules_version"]: v for (name, labels), v in got.items() if name == "segengine_build_info"}
    assert build == {"rules@1": 1}
    b.rules_info.info({"version": "rules@2"})  # one process has reloaded, the other not yet
    got = samples(merged_page(page(a), page(b)))
    build = {dict(labels)["rules_version"]: v for (name, labels), v in got.items() if name == "segengine_build_info"}
    assert build == {"rules@1": 1, "rules@2": 1}


def test_process_metrics_add_up_except_the_start_time_and_the_limits() -> None:
    pages = [
        "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 100.0\n"
        "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 50.0\n"
        "# TYPE process_max_fds gauge\nprocess_max_fds 1024.0\n"
        "# TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total 1.5\n# EOF\n",
        "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 250.0\n"
        "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 40.0\n"
        "# TYPE process_max_fds gauge\nprocess_max_fds 1024.0\n"
        "# TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total 2.0\n# EOF\n",
    ]
    got = samples(merged_page(*pages))
    assert got[("process_resident_memory_bytes", ())] == 350
    assert got[("process_start_time_seconds", ())] == 40
    assert got[("process_max_fds", ())] == 1024
    assert got[("process_cpu_seconds_total", ())] == 3.5


def test_the_merged_page_is_valid_in_both_formats_without_created_series() -> None:
    a, b = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())  # with process_* and python_info
    a.events.labels("events.purchase", "purchase", "applied").inc(3)
    b.events.labels("events.purchase", "purchase", "applied").inc(4)
    merged = MergedPages([page(a), page(b)])
    classic, content_type = exposition(merged, "")
    assert content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(classic.decode())}
    (applied,) = [s for s in families["segengine_events"].samples if s.name == "segengine_events_total"]
    assert applied.value == 7
    assert families["python_info"].samples[0].value == 1  # the same interpreter: one series of 1, not 2
    assert "_created" not in classic.decode()
    om = merged_page(page(a), page(b))
    assert om.endswith("# EOF\n") and "_created" not in om


def test_created_series_are_never_summed_into_the_page() -> None:
    a, b = two_workers()
    a.events.labels("events.purchase", "purchase", "applied").inc(3)
    b.events.labels("events.purchase", "purchase", "applied").inc(4)
    raw = [exposition(m.registry, OPENMETRICS)[0].decode() for m in (a, b)]  # with *_created, as a registry has it
    assert "segengine_events_created" in raw[0]
    got = samples(merged_page(*raw))
    assert not [name for name, _ in got if name.endswith("_created")]
    assert (
        got[("segengine_events_total", (("outcome", "applied"), ("topic", "events.purchase"), ("type", "purchase")))]
        == 7
    )


def test_a_metric_of_two_types_is_refused() -> None:
    counter = "# TYPE x counter\nx_total 1.0\n# EOF\n"
    gauge = "# TYPE x gauge\nx 1.0\n# EOF\n"
    with pytest.raises(ValueError, match="x is a counter in one process and a gauge in another"):
        merge_pages([counter, gauge])


def test_each_child_gets_the_resolved_settings_one_process_and_an_inherited_api_socket(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    settings = Settings(
        kafka_bootstrap="127.0.0.1:9092", redis_url="redis://127.0.0.1:7000/0", rules_file=rules, clock="event",
        processes=4, http_port=9108, embedded=True,
    )  # fmt: skip
    environ = {"PATH": "/bin", "SEGENGINE_PROCESSES": "4", "SEGENGINE_BATCH_MAX_RECORDS": "500"}
    env = child_env(settings, environ, 2, 7)
    assert env["PATH"] == "/bin" and env["SEGENGINE_BATCH_MAX_RECORDS"] == "500"
    assert env["SEGENGINE_PROCESSES"] == "1"
    assert env["SEGENGINE_EMBEDDED"] == "false"
    assert (env["SEGENGINE_HTTP_HOST"], env["SEGENGINE_HTTP_PORT"], env["SEGENGINE_HTTP_SOCKET_FD"]) == (
        "127.0.0.1",
        "0",
        "7",
    )
    assert env["SEGENGINE_KAFKA_BOOTSTRAP"] == "127.0.0.1:9092"
    assert env["SEGENGINE_REDIS_URL"] == "redis://127.0.0.1:7000/0"
    assert env["SEGENGINE_RULES_FILE"] == str(rules) and env["SEGENGINE_CLOCK"] == "event"
    assert "SEGENGINE_GROUP_INSTANCE_ID" not in env  # dynamic membership stays dynamic
    assert environ["SEGENGINE_PROCESSES"] == "4"  # the supervisor's own environment is untouched
    no_api = child_env(settings, {"SEGENGINE_HTTP_SOCKET_FD": "5"}, 0, None)  # no API asked for: none in the children
    assert no_api["SEGENGINE_HTTP_PORT"] == "0" and "SEGENGINE_HTTP_SOCKET_FD" not in no_api


def test_static_members_get_distinct_instance_ids() -> None:
    settings = Settings(kafka_bootstrap="k:9092", redis_url="redis://r:6380/0", group_instance_id="pod-7", processes=3)
    ids = [child_env(settings, {}, i, None)["SEGENGINE_GROUP_INSTANCE_ID"] for i in range(3)]
    assert ids == ["pod-7-0", "pod-7-1", "pod-7-2"]


@pytest.mark.parametrize("given", ["0", "65", "-1"])
def test_processes_out_of_range_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, given: str) -> None:
    monkeypatch.setenv("SEGENGINE_PROCESSES", given)
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert settings_problems(raised.value, {"SEGENGINE_PROCESSES": given}) == [
        f"SEGENGINE_PROCESSES={given!r}: the number of worker processes is from 1 to 64 "
        f"(one per core is the most that helps), not {given}"
    ]


def test_processes_defaults_to_one_and_takes_1_to_64(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEGENGINE_PROCESSES", raising=False)
    assert Settings().processes == 1
    assert Settings(processes=64).processes == 64


def test_the_set_is_ready_only_when_every_child_is() -> None:
    ready = ChildHealth(0, 100, True, True, True, 12)
    assert readiness([ready, ChildHealth(1, 101, True, True, True, 12)]) == (
        True,
        {
            "ready": True, "redis": True, "kafka": True, "partitions": 24,
            "processes": [
                {"process": 0, "pid": 100, "ready": True, "partitions": 12},
                {"process": 1, "pid": 101, "ready": True, "partitions": 12},
            ],
        },
    )  # fmt: skip
    no_partitions = ChildHealth(1, 101, False, True, True, 0)
    ok, body = readiness([ready, no_partitions])
    assert not ok and body["ready"] is False and body["partitions"] == 12 and body["redis"] and body["kafka"]
    ok, body = readiness([ready, ChildHealth(1, 101, False, False, True, 0)])
    assert not ok and body["redis"] is False
    assert readiness([])[0] is False


def test_a_stop_by_signal_accepts_only_the_exit_codes_of_a_graceful_stop() -> None:
    assert clean_exit(0, signal.SIGTERM) and clean_exit(0, signal.SIGINT)
    assert clean_exit(130, signal.SIGINT) and not clean_exit(130, signal.SIGTERM)
    assert clean_exit(-signal.SIGTERM, signal.SIGTERM)  # killed by the signal itself, while still starting
    assert not clean_exit(1, signal.SIGTERM) and not clean_exit(-signal.SIGKILL, signal.SIGTERM)
    assert exit_reason(1) == "exited with code 1"
    assert exit_reason(-signal.SIGKILL) == "was killed by SIGKILL"
