from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path

import pytest

from anomon.config import (
    SOURCE_MODELS,
    AlarmConfig,
    AlertmanagerReceiverConfig,
    AlertsConfig,
    Config,
    DaemonConfig,
    DatabaseConfig,
    DeliveryConfig,
    DetectionConfig,
    EmailReceiverConfig,
    ForestConfig,
    Override,
    RetentionConfig,
    RouteConfig,
    SilenceConfig,
    SystemSourceConfig,
    TimeIntervalConfig,
    WebhookReceiverConfig,
    config_warnings,
    load_config,
)
from anomon.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "anomon.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "anomon.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ or {})
    assert caught.value.path == str(path)
    assert str(caught.value).startswith(f"{path}: ")
    return list(caught.value.problems)


SYSTEM = '[[sources]]\nname = "sys"\nkind = "system"\n'


def test_it_loads_an_empty_file_with_every_default(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), environ={})
    assert config.database.url == "sqlite:///anomon.db"
    assert config.database.busy_timeout == timedelta(seconds=5)
    assert config.sources == []


def test_it_loads_the_default_config_the_quickstart_runs() -> None:
    config = load_config(ROOT / "config" / "anomon.toml", environ={})
    assert [(s.name, s.kind, s.interval) for s in config.sources] == [
        ("system", "system", timedelta(seconds=15))
    ]
    assert config.database.url == "sqlite:///anomon.db"


PREDICTIONS = '[[sources]]\nname = "q"\nkind = "predictions"\n'
LOGS = '[[sources]]\nname = "l"\nkind = "logs"\npath = "/var/log/x.log"\n'

# keys without a default of which a kind needs one (predictions: a file or a database)
ONE_OF_REQUIRED = {"predictions": ["path"]}


def test_it_documents_every_key_with_its_default_in_the_example() -> None:
    config = load_config(EXAMPLE, environ={})
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    for section, model in (
        ("database", DatabaseConfig),
        ("daemon", DaemonConfig),
        ("detection", DetectionConfig),
        ("retention", RetentionConfig),
    ):
        commented = {"limits", "overrides"} if section == "detection" else set()  # no default
        documented = set(data[section]) | commented
        assert documented == set(model.model_fields), section
        assert getattr(config, section) == model(), section
    documented = set(data["alerts"]) | {"receiver", "receivers", "routes", "silences"}
    documented |= {"time_intervals"}  # commented out: it has no default
    assert documented == set(AlertsConfig.model_fields)
    assert config.alerts == AlertsConfig()
    assert set(data["alerts"]["delivery"]) == set(DeliveryConfig.model_fields)
    text = EXAMPLE.read_text(encoding="utf-8")
    receivers = (WebhookReceiverConfig, EmailReceiverConfig, AlertmanagerReceiverConfig)
    for model in (*receivers, RouteConfig, SilenceConfig, TimeIntervalConfig):
        keys = {info.alias or key for key, info in model.model_fields.items()}
        missing = {key for key in keys if f"# {key} =" not in text}
        assert not missing, f"keys of {model.__name__} missing from the example: {missing}"
    assert set(data["detection"]["forest"]) == set(ForestConfig.model_fields)
    assert set(data["detection"]["alarm"]) == set(AlarmConfig.model_fields)
    assert "[[detection.limits]]" in EXAMPLE.read_text(encoding="utf-8")  # commented: no default
    keys = {info.alias or key for key, info in Override.model_fields.items()}
    missing = {key for key in keys if f"# {key} =" not in EXAMPLE.read_text(encoding="utf-8")}
    assert not missing, f"keys of [[detection.overrides]] missing from the example: {missing}"
    by_kind = {source.kind: source for source in config.sources}
    assert set(by_kind) == set(SOURCE_MODELS)
    for kind, source in by_kind.items():
        documented = {source_data["kind"]: source_data for source_data in data["sources"]}[kind]
        text = EXAMPLE.read_text(encoding="utf-8")
        commented = {key for key in SOURCE_MODELS[kind].model_fields if f"# {key} =" in text}
        missing = set(SOURCE_MODELS[kind].model_fields) - set(documented) - commented
        assert not missing, f"keys of {kind} missing from the example: {missing}"
        model = SOURCE_MODELS[kind]
        required = [key for key, field in model.model_fields.items() if field.is_required()]
        required += ONE_OF_REQUIRED.get(kind, [])
        default = model.model_validate({key: documented[key] for key in required})
        assert source == default, f"the example's {kind} values differ from the defaults"


def test_it_is_frozen() -> None:
    config = Config()
    with pytest.raises(ValueError, match="frozen"):
        config.database.url = "sqlite:///other.db"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[database]\nurl = "sqlite:///x.db"\nbogus = 1\n',
            "database.bogus: unknown key; expected one of: url, busy_timeout, migrate_on_start",
        ),
        (SYSTEM + 'intervl = "3s"\n', "sources[0].intervl: unknown key (did you mean 'interval'?)"),
        (
            SYSTEM + 'interval = "15x"\n',
            "sources[0].interval: expected a duration such as 15s, 5m, 1h30m or 7d "
            "(units ms, s, m, h, d, w), got: '15x'",
        ),
        (
            SYSTEM + "interval = 15\n",
            "sources[0].interval: expected a duration such as 15s, 5m or 7d (a string), got: 15",
        ),
        (SYSTEM + 'interval = "500ms"\n', "sources[0].interval: must be at least 1s, got: 500ms"),
        (SYSTEM + 'timeout = "0s"\n', "sources[0].timeout: must be positive, got: 0s"),
        (
            SYSTEM + 'per_cpu = "yes please"\n',
            "sources[0].per_cpu: expected true or false, got: 'yes please'",
        ),
        (
            SYSTEM + 'labels = {"bad name" = "x"}\n',
            "sources[0].labels.bad name: key expected to match pattern '^[A-Za-z_][A-Za-z0-9_]*$', "
            "got: 'bad name'",
        ),
        ('[[sources]]\nname = "x"\n', "sources[0].kind: required, but missing"),
        (
            '[[sources]]\nname = "x"\nkind = "carrier-pigeon"\n',
            "sources[0].kind: expected one of 'system', 'http_json', 'prometheus_scrape', "
            "'prometheus_query', 'mlflow', 'sql', 'predictions', 'logs', 'tensorboard', 'gpu', "
            "got: 'carrier-pigeon'",
        ),
        ('[[sources]]\nkind = "system"\n', "sources[0].name: required, but missing"),
        (
            SYSTEM + SYSTEM,
            "sources[1].name: duplicate source name 'sys' (first used by sources[0])",
        ),
        (
            '[database]\nurl = "mysql://x"\n',
            "database.url: expected a SQLAlchemy URL starting with sqlite:/// or postgresql://, "
            "got one starting with: 'mysql'",
        ),
        (
            '[daemon]\nlog_level = "loud"\n',
            "daemon.log_level: expected 'debug', 'info', 'warning' or 'error', got: 'loud'",
        ),
        ("database = 3\n", "database: expected a valid dictionary or instance of DatabaseConfig"),
        (
            PREDICTIONS + 'path = "p.csv"\nurl = "sqlite:///x.db"\nquery = "SELECT 1"\n',
            "sources[0]: set either path (a CSV / JSONL file) or url and query, not both",
        ),
        (
            PREDICTIONS + 'url = "sqlite:///x.db"\n',
            "sources[0]: url needs a query selecting the prediction log's rows",
        ),
        (
            PREDICTIONS + 'path = "p.csv"\nscore = "s"\nclass_scores = { a = "pa" }\n',
            "sources[0]: set score (binary) or class_scores (multiclass), not both",
        ),
        (
            PREDICTIONS + 'path = "p.csv"\nwindow = "1h"\nlookback = "30m"\n',
            "sources[0]: lookback must be at least one window",
        ),
        (
            LOGS + 'patterns = { slow = { regex = "took ([0-9]+)", aggregate = "mean" } }\n',
            "sources[0].patterns.slow: aggregate 'mean' needs a named group (?P<value>...)",
        ),
        (
            LOGS + 'patterns = { broken = "ERROR(" }\n',
            "sources[0].patterns.broken.regex: not a valid regular expression",
        ),
        (
            '[alerts]\nreceiver = "pager"\n[[alerts.routes]]\nreceiver = "slack"\n',
            "alerts: unknown receiver 'pager', 'slack' (receivers: none)",
        ),
        (
            '[[alerts.silences]]\ncomment = "all"\n',
            "alerts.silences[0]: a silence needs match or match_re",
        ),
        (
            '[[alerts.silences]]\nmatch = { a = "b" }\nends_at = 2026-12-01T10:00:00\n',
            "alerts.silences[0]: silence times need a zone (e.g. Z)",
        ),
        (
            '[[alerts.receivers]]\nname = "m"\nkind = "email"\nto = ["not an address"]\n',
            "alerts.receivers[0].to[0]: expected to match pattern",
        ),
        (
            '[[sources]]\nname = "w"\nkind = "sql"\nurl = "warehouse.db"\nquery = "SELECT 1"\n',
            "sources[0].url: expected a SQLAlchemy URL such as sqlite:///logs.db",
        ),
    ],
)
def test_it_reports_each_problem_with_its_field_path(
    tmp_path: Path, text: str, expected: str
) -> None:
    found = problems(tmp_path, text)
    assert any(line.startswith(expected) for line in found), found


def test_it_reports_every_problem_at_once(tmp_path: Path) -> None:
    text = '[database]\nbogus = 1\n[[sources]]\nname = "a"\nkind = "system"\ninterval = "x"\n'
    found = problems(tmp_path, text)
    assert [line.split(":")[0] for line in found] == ["database.bogus", "sources[0].interval"]


def test_an_entity_or_label_value_with_a_line_break_is_refused(tmp_path: Path) -> None:
    """An entity names series and goes into every message: with a CR LF in it every
    email failed (its subject), retried until dead."""
    text = SYSTEM + 'entity = "x\\r\\nBcc: evil@example.com"\nlabels = { team = "a\\u202eb" }\n'
    found = problems(tmp_path, text)
    assert found == [
        "sources[0].entity: must hold no control, line-break or bidi character, "
        "got: 'x\\r\\nBcc: evil@example.com'",
        "sources[0].labels.team: must hold no control, line-break or bidi character, "
        "got: 'a\\u202eb'",
    ]


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file:db?mode=memory&uri=true"]
)
def test_an_in_memory_database_is_refused(tmp_path: Path, url: str) -> None:
    """It passed the check, then the daemon's every connection saw an empty database of
    its own ("no such table: series") and everything was lost at exit."""
    (found,) = problems(tmp_path, f'[database]\nurl = "{url}"\n')
    assert found.startswith("database.url: expected the path of a SQLite file, got an in-memory")


def test_a_console_address_that_cannot_be_served_is_refused(tmp_path: Path) -> None:
    """Beside metrics on 65535 it logged port 65536 and listened elsewhere; on the metrics
    address itself it passed the check and the daemon exited at start."""
    (found,) = problems(tmp_path, '[daemon]\nmetrics_listen = "127.0.0.1:65535"\n')
    assert "web.listen: beside metrics_listen it would be port 65536" in found
    same = '[daemon]\nmetrics_listen = "127.0.0.1:9464"\n[web]\nlisten = "127.0.0.1:9464"\n'
    (found,) = problems(tmp_path, same)
    assert "web.listen: 127.0.0.1:9464 is daemon.metrics_listen already" in found


def test_it_names_the_file_and_line_of_malformed_toml(tmp_path: Path) -> None:
    found = problems(tmp_path, '[database]\nurl = "unterminated\n')
    assert found[0].startswith("invalid TOML: ")
    assert "line 2" in found[0]


def test_it_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: file not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_it_interpolates_environment_variables(tmp_path: Path) -> None:
    text = (
        '[database]\nurl = "postgresql://u:${PW}@127.0.0.1/db"\n'
        + SYSTEM
        + ('labels = {team = "$${literal}", zone = "${ZONE}"}\n')
    )
    config = load_config(write(tmp_path, text), environ={"PW": "s3cret", "ZONE": "eu"})
    assert config.database.url == "postgresql://u:s3cret@127.0.0.1/db"
    assert config.sources[0].labels == {"team": "${literal}", "zone": "eu"}


def test_it_names_a_missing_environment_variable_and_where_it_is_used(tmp_path: Path) -> None:
    found = problems(tmp_path, '[database]\nurl = "postgresql://u:${DB_PASSWORD}@h/db"\n')
    assert found == ["database.url: environment variable DB_PASSWORD is not set"]
    # with every other problem, not alone (fix one, run again, find the next: no more)
    text = SYSTEM + 'interval = "15x"\nentity = "${NOPE}"\n'
    assert problems(tmp_path, text) == [
        "sources[0].entity: environment variable NOPE is not set",
        "sources[0].interval: expected a duration such as 15s, 5m, 1h30m or 7d (units ms, "
        "s, m, h, d, w), got: '15x'",
    ]


def test_the_database_url_environment_variable_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[database]\nurl = "sqlite:///file.db"\n')
    config = load_config(path, environ={"ANOMON_DATABASE_URL": "sqlite:///env.db"})
    assert config.database.url == "sqlite:///env.db"
    assert load_config(path, environ={}).database.url == "sqlite:///file.db"
    # a bad URL from the environment is named as the environment's, not the file's
    (found,) = problems(tmp_path, "", environ={"ANOMON_DATABASE_URL": "mysql://x@h/db"})
    assert found.startswith("database.url (from $ANOMON_DATABASE_URL): expected a SQLAlchemy")


def test_it_accepts_a_full_system_source(tmp_path: Path) -> None:
    text = SYSTEM + 'interval = "1m"\nper_cpu = true\ndisks = ["/", "/data"]\nlabels = {dc = "x"}\n'
    source = load_config(write(tmp_path, text), environ={}).sources[0]
    assert isinstance(source, SystemSourceConfig)
    assert (source.interval, source.per_cpu, source.disks) == (
        timedelta(minutes=1),
        True,
        ["/", "/data"],
    )


def test_a_receiver_kind_that_is_a_webhook_format_says_how_to_write_it(tmp_path: Path) -> None:
    found = problems(tmp_path, '[[alerts.receivers]]\nname = "s"\nkind = "slack"\nurl = "x"\n')
    assert found == [
        "alerts.receivers[0].kind: expected one of 'webhook', 'email', 'alertmanager', "
        "'command', got: 'slack' "
        '(a slack receiver is kind = "webhook" with format = "slack")'
    ]


def test_every_duplicate_source_and_receiver_problem_is_reported(tmp_path: Path) -> None:
    text = (
        SYSTEM + SYSTEM + SYSTEM + '[alerts]\nreceiver = "a"\n'
        '[[alerts.routes]]\nreceiver = "b"\n'
        '[[alerts.receivers]]\nname = "x"\nkind = "email"\nto = ["a@b"]\n'
        '[[alerts.receivers]]\nname = "x"\nkind = "email"\nto = ["a@b"]\n'
    )
    assert problems(tmp_path, text) == [
        "sources[1].name: duplicate source name 'sys' (first used by sources[0])",
        "sources[2].name: duplicate source name 'sys' (first used by sources[0])",
        "alerts: receiver names must be unique, got: ['x', 'x']",
        "alerts: unknown receiver 'a', 'b' (receivers: x, x)",
    ]


def test_an_unused_receiver_is_a_warning() -> None:
    config = Config.model_validate(
        {
            "alerts": {
                "receiver": "a",
                "receivers": [
                    {"name": "a", "kind": "email", "to": ["a@b"]},
                    {"name": "b", "kind": "email", "to": ["a@b"]},
                ],
            }
        }
    )
    assert config_warnings(config) == [
        "alerts.receivers[1]: 'b' is not [alerts] receiver and no route names it: "
        "it will get no notification"
    ]
    silent = config.model_copy(
        update={"alerts": config.alerts.model_copy(update={"enabled": False})}
    )
    assert config_warnings(silent) == []


def test_an_override_with_bad_settings_is_refused_with_each_field_named(tmp_path: Path) -> None:
    path = tmp_path / "anomon.toml"
    path.write_text(
        "[[detection.overrides]]\n"
        'metric = "latency_*"\n'
        'direction = "sideways"\n'
        "threshold = 120\n"
        'annotations = { "runbook url" = "x" }\n'
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    text = str(error.value)
    assert "detection.overrides[0].direction" in text
    assert "detection.overrides[0].threshold" in text
    assert "detection.overrides[0].annotations" in text
