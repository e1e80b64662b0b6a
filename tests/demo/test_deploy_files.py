"""Deploy files agree with the code: every YAML parses, names only settings heapbot
reads, probes point at routes bot.ops serves, manifests declare /heap and its scopes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from pydantic import AliasChoices, SecretStr

from bot.jobs import QueueSettings
from bot.ops import register_routes
from bot.registry import load_registry
from bot.serve import build_internal_app, build_web_app
from bot.settings import Settings
from bot.slack.server import EVENTS_PATH

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "kubernetes"
EXTRA_ENV = {"MPLCONFIGDIR"}  # read by matplotlib (charts), not by heapbot's settings


def env_names_of(settings_class: type[Any]) -> set[str]:
    names: set[str] = set()
    for field in settings_class.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(c for c in alias.choices if isinstance(c, str))
    return names


SETTINGS_ENV = env_names_of(Settings)
QUEUE_ENV = env_names_of(QueueSettings)


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def k8s(kind: str) -> dict[str, Any]:
    found = [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml_docs(path)
             if doc.get("kind") == kind and doc["metadata"].get("namespace") != "prod"]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def registry_from_text(text: str, tmp_path: Path):
    path = tmp_path / "heapbot.yaml"
    path.write_text(text)
    return load_registry(path)


def registry_env_names(text: str, tmp_path: Path) -> set[str]:
    registry = registry_from_text(text, tmp_path)
    names = set()
    for service in registry.services.values():
        if service.auth_header_env:
            names.add(service.auth_header_env)
        names.update(service.headers_env.values())
    return names


def served_get_paths() -> set[str]:
    app = web.Application()
    register_routes(app, None)
    return {route.resource.canonical for route in app.router.routes() if route.method == "GET"}


@pytest.mark.parametrize("path", sorted(
    [*DEPLOY.glob("*.yml"), *DEPLOY.glob("*.yaml"), *K8S.glob("*.yaml")]), ids=str)
def test_every_yaml_file_parses(path: Path) -> None:
    assert yaml_docs(path), f"{path} is empty"


def test_settings_have_env_aliases_to_check_against() -> None:
    assert {"SLACK_BOT_TOKEN", "REDIS_URL", "HEAPBOT_PORT"} <= SETTINGS_ENV
    assert "HEAPBOT_JOB_CONCURRENCY" in QUEUE_ENV


# -- Slack app manifests ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["slack-app-manifest.yml", "slack-app-manifest-http.yml"])
def test_manifest_declares_heap_command_scopes_and_events(name: str) -> None:
    manifest = yaml.safe_load((DEPLOY / name).read_text())
    commands = {c["command"]: c for c in manifest["features"]["slash_commands"]}
    assert "/heap" in commands
    assert "top" in commands["/heap"]["usage_hint"]
    assert manifest["features"]["bot_user"]["display_name"]
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"commands", "chat:write", "files:write", "app_mentions:read"} <= scopes
    settings = manifest["settings"]
    assert "app_mention" in settings["event_subscriptions"]["bot_events"]
    assert settings["interactivity"]["is_enabled"] is True


def test_socket_mode_manifest_has_no_request_urls() -> None:
    manifest = yaml.safe_load((DEPLOY / "slack-app-manifest.yml").read_text())
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert "url" not in manifest["features"]["slash_commands"][0]
    assert "request_url" not in manifest["settings"]["interactivity"]


def test_http_manifest_points_every_url_at_the_events_route() -> None:
    manifest = yaml.safe_load((DEPLOY / "slack-app-manifest-http.yml").read_text())
    settings = manifest["settings"]
    assert settings["socket_mode_enabled"] is False
    urls = [manifest["features"]["slash_commands"][0]["url"],
            settings["event_subscriptions"]["request_url"],
            settings["interactivity"]["request_url"]]
    for url in urls:
        assert url.startswith("https://")
        assert url.endswith(EVENTS_PATH)


# -- Kubernetes ----------------------------------------------------------------------------

def test_kustomization_lists_existing_files() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    assert "secret.example.yaml" not in kustomization["resources"]


def test_deployment_probes_point_at_routes_ops_serves() -> None:
    container = k8s("Deployment")["spec"]["template"]["spec"]["containers"][0]
    served = served_get_paths()
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] in served
        assert container[probe]["httpGet"]["port"] in {p["name"] for p in container["ports"]}
    config = k8s("ConfigMap")["data"]
    assert container["ports"][0]["containerPort"] == int(config["HEAPBOT_PORT"])


def test_deployment_is_replicated_hardened_and_bounded() -> None:
    deployment = k8s("Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    # A read-only root needs writable mounts for the data dir and /tmp (matplotlib).
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    config = k8s("ConfigMap")["data"]
    assert config["HEAPBOT_DATA_DIR"] in mounts
    assert "/tmp" in mounts
    assert str(Path(config["HEAPBOT_CONFIG"]).parent) in mounts


def test_deployment_env_names_are_settings_heapbot_reads(tmp_path: Path) -> None:
    config = k8s("ConfigMap")["data"]
    known = SETTINGS_ENV | QUEUE_ENV | EXTRA_ENV | registry_env_names(config["heapbot.yaml"],
                                                                      tmp_path)
    container = k8s("Deployment")["spec"]["template"]["spec"]["containers"][0]
    env_names = {e["name"] for e in container["env"]}
    config_env = {k for k in config if k != "heapbot.yaml"}
    assert not (env_names | config_env) - known, (env_names | config_env) - known
    # Secrets come from secretKeyRef, never as plain values.
    for entry in container["env"]:
        if "TOKEN" in entry["name"] or "SECRET" in entry["name"] or entry["name"] == "REDIS_URL":
            assert "secretKeyRef" in entry["valueFrom"], entry["name"]
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    for entry in container["env"]:
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret["stringData"]


def test_configmap_registry_loads_with_dns_target(tmp_path: Path) -> None:
    registry = registry_from_text(k8s("ConfigMap")["data"]["heapbot.yaml"], tmp_path)
    payments = registry.resolve("pay")
    assert payments.name == "payments"
    assert "dns+http://payments-headless.prod.svc:6060" in payments.targets
    headless = yaml.safe_load((K8S / "example-payments-headless.yaml").read_text())
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["metadata"]["name"] == "payments-headless"
    assert headless["metadata"]["namespace"] == "prod"
    assert headless["spec"]["ports"][0]["port"] == 6060


def test_network_policy_allows_pprof_redis_dns_and_slack_only(tmp_path: Path) -> None:
    policy = k8s("NetworkPolicy")
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ports = {(p["port"], p.get("protocol", "TCP"))
             for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert ports == {(6060, "TCP"), (6379, "TCP"), (53, "UDP"), (53, "TCP"), (443, "TCP")}
    registry = registry_from_text(k8s("ConfigMap")["data"]["heapbot.yaml"], tmp_path)
    target_ports = {int(re.search(r":(\d+)", t.split("//", 1)[1]).group(1))
                    for s in registry.services.values() for t in s.targets}
    assert target_ports <= {6060}
    pod_labels = k8s("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()


def test_internal_port_serves_metrics_and_hooks_to_the_monitoring_namespace_only() -> None:
    """HEAPBOT_INTERNAL_PORT in the manifests: declared on the pod and the Service, scraped
    by Prometheus there, and admitted by the NetworkPolicy from `monitoring` alone."""
    config = k8s("ConfigMap")["data"]
    public, internal = int(config["HEAPBOT_PORT"]), int(config["HEAPBOT_INTERNAL_PORT"])
    settings = Settings(HEAPBOT_PORT=config["HEAPBOT_PORT"],
                        HEAPBOT_INTERNAL_PORT=config["HEAPBOT_INTERNAL_PORT"],
                        SLACK_BOT_TOKEN=SecretStr("xoxb-deploy-test"),
                        SLACK_SIGNING_SECRET=SecretStr("deploy-test-secret"))
    assert settings.internal_port == internal != public
    # What each port serves, as `heapbot serve` builds them.
    on_public = {r.resource.canonical for r in
                 build_web_app(None, settings, start_worker=False).router.routes()}
    on_internal = {r.resource.canonical for r in
                   build_internal_app(None, settings).router.routes()}  # type: ignore[arg-type]
    assert "/metrics" in on_internal and "/hooks/alertmanager" in on_internal
    assert "/metrics" not in on_public and not any(p.startswith("/hooks/") for p in on_public)
    assert EVENTS_PATH in on_public

    template = k8s("Deployment")["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
    assert ports == {"http": public, "internal": internal}
    service = k8s("Service")
    for scrape in (template["metadata"]["annotations"], service["metadata"]["annotations"]):
        assert scrape["prometheus.io/scrape"] == "true"
        assert scrape["prometheus.io/port"] == str(internal)
        assert scrape["prometheus.io/path"] in on_internal
    by_target = {p["targetPort"]: p["port"] for p in service["spec"]["ports"]}
    assert set(by_target) == {"http", "internal"} and by_target["internal"] == internal

    admitted: dict[int, list[Any]] = {}
    for rule in k8s("NetworkPolicy")["spec"]["ingress"]:
        assert rule.get("ports"), "an ingress rule without ports opens every port"
        for port in rule["ports"]:
            admitted.setdefault(port["port"], []).append(rule.get("from"))
    assert admitted == {
        public: [None],  # from anywhere, as before (Slack events through the ingress)
        internal: [[{"namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]],
    }


def test_service_and_pdb_select_the_deployment_pods() -> None:
    pod_labels = k8s("Deployment")["spec"]["template"]["metadata"]["labels"]
    service = k8s("Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    container = k8s("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}
    pdb = k8s("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] < k8s("Deployment")["spec"]["replicas"]


# -- docker compose, .env.example, Dockerfile -----------------------------------------------

def test_compose_wires_redis_demo_and_heapbot(tmp_path: Path) -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "demo", "heapbot"} <= set(services)
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    heapbot = services["heapbot"]
    env = heapbot["environment"]
    assert not set(env) - SETTINGS_ENV - QUEUE_ENV, set(env) - SETTINGS_ENV - QUEUE_ENV
    assert env["REDIS_URL"].startswith("redis://redis:")
    assert (DEPLOY / heapbot["build"]["context"] / heapbot["build"]["dockerfile"]).is_file()
    assert (DEPLOY / services["demo"]["build"]["context"] / "Dockerfile").is_file()
    # The registry handed to heapbot points at the demo service's pprof port.
    config = compose["configs"][heapbot["configs"][0]["source"]]["content"]
    assert heapbot["configs"][0]["target"] == env["HEAPBOT_CONFIG"]
    registry = registry_from_text(config, tmp_path)
    demo = registry.resolve("demo")
    assert demo.targets == ("http://demo:6060",)
    assert services["demo"]["environment"]["DEMO_ADDR"].endswith(":6060")
    main_go = (DEPLOY / "demo" / "main.go").read_text()
    for name in services["demo"]["environment"]:
        assert f'"{name}"' in main_go, f"the demo does not read {name}"


def _env_example() -> dict[str, str]:
    return dict(line.split("=", 1) for line in (DEPLOY / ".env.example").read_text()
                .splitlines() if line and not line.startswith("#"))


def test_compose_hands_heapbot_every_variable_of_deploy_env() -> None:
    """README: `cp deploy/.env.example deploy/.env` and fill it in. Every variable set there
    must reach the container (HEAPBOT_METRICS_TOKEN, HEAPBOT_ALERTMANAGER_OPEN, a pprof
    auth header…), not only the few `environment:` names; what compose wires itself
    must not silently differ from the example's value."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    heapbot = compose["services"]["heapbot"]
    files = [e["path"] if isinstance(e, dict) else e for e in heapbot.get("env_file", [])]
    assert ".env" in files, files  # relative to deploy/, where the README copies it
    example = _env_example()
    for name, value in heapbot["environment"].items():
        if "${" not in str(value) and name in example:
            assert example[name] == str(value), (name, example[name], value)


def test_docker_build_context_holds_what_pip_install_reads() -> None:
    """`pip install .` in the image reads pyproject's readme and license-files and the
    packages: each must be copied (and kept by the .dockerignore), or the build fails or
    warns; ENTRYPOINT is heapbot's console script and CMD one of its subcommands."""
    import tomllib

    from bot.cli import _parser

    project = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())
    needed = {"pyproject.toml", project["project"]["readme"],
              *project["project"].get("license-files", [])}
    needed |= {p.rstrip("*") for p in
               project["tool"]["setuptools"]["packages"]["find"]["include"]}
    text = (DEPLOY / "Dockerfile").read_text()
    copied = {source.rstrip("/") for line in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M)
              for source in line.split()}
    kept = {line[1:].rstrip("/") for line in
            (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines() if line.startswith("!")}
    assert needed <= copied, needed - copied
    assert needed <= kept, needed - kept
    for name in needed:
        assert (DEPLOY.parent / name).exists(), name
    entry = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (.+)$", text, re.M).group(1))
    assert entry == ["heapbot"] and "heapbot" in project["project"]["scripts"]
    _, subcommands = _parser()
    assert cmd[0] in subcommands


def test_env_example_lists_every_setting_and_nothing_unknown() -> None:
    names = set()
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        match = re.match(r"#?\s*([A-Z][A-Z0-9_]+)=", line)
        if match:
            names.add(match.group(1))
    assert names >= SETTINGS_ENV, SETTINGS_ENV - names
    assert names >= QUEUE_ENV, QUEUE_ENV - names
    assert not names - SETTINGS_ENV - QUEUE_ENV - {"PAYMENTS_PPROF_AUTH"}
    # Copying it as is must give valid settings.
    values = dict(line.split("=", 1) for line in (DEPLOY / ".env.example").read_text()
                  .splitlines() if line and not line.startswith("#"))
    settings = Settings(**{k: v for k, v in values.items() if k in SETTINGS_ENV})
    assert settings.port == 3000
    QueueSettings(**{k: v for k, v in values.items() if k in QUEUE_ENV})


def test_dockerfile_runs_heapbot_serve_as_non_root_with_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert "HEALTHCHECK" in text and "/healthz" in text.split("HEALTHCHECK", 1)[1]
    assert "/healthz" in served_get_paths()
    assert 'ENTRYPOINT ["heapbot"]' in text and 'CMD ["serve"]' in text
    installs = re.findall(r"pip install[^\n]*", text)
    assert installs and all("[dev]" not in line for line in installs)
    exposed = int(re.search(r"^EXPOSE (\d+)", text, re.M).group(1))
    assert exposed == Settings.model_fields["port"].default
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for source in copied.split():
            assert (DEPLOY.parent / source).exists(), source


def test_docker_context_keeps_what_the_dockerfile_copies() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    text = (DEPLOY / "Dockerfile").read_text()
    copied = {source.rstrip("/") for line in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M)
              for source in line.split()}
    assert copied <= kept
    assert "*" in ignore  # .venv, .git and tests stay out of the build context
