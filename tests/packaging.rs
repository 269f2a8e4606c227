//! Container packaging: `docker/Dockerfile` and `docker-compose.yml`, checked without a Docker engine.
//!
//! This machine has only the Docker client, so `docker compose config` and `docker build` cannot
//! run here. These tests never call `docker`: they parse the two files and check the wiring that
//! the daemon depends on (service names, `DATABASE_URL`, healthchecks, volumes, profiles, the
//! non-root user, the built binary). Every check is a function returning `Err(reason)`;
//! `checks_reject_broken_variants` feeds each one a deliberately broken copy of the real files and
//! requires it to fail, so none of them can pass vacuously.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

const BINARY: &str = "devops-control-tower";
const TRACE_DIR: &str = "/app/logs";
const HOST_LOGS: &str = "./logs";

type Check = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    let path = repo_file(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// docker-compose.yml helpers
// ---------------------------------------------------------------------------------------------

fn load_compose_text(text: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("docker-compose.yml is not YAML: {e}"));
    assert_eq!(docs.len(), 1, "docker-compose.yml must hold exactly one YAML document");
    docs.remove(0)
}

fn load_compose() -> Yaml {
    load_compose_text(&read("docker-compose.yml"))
}

fn yaml(text: &str) -> Yaml {
    YamlLoader::load_from_str(text).expect("test fragment is YAML").remove(0)
}

/// Sets `doc[path...] = value`, creating nothing: every parent must exist and be a mapping.
fn set(doc: &mut Yaml, path: &[&str], value: Yaml) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut node = doc;
    for key in parents {
        node = node
            .as_mut_hash()
            .and_then(|h| h.get_mut(&Yaml::String(key.to_string())))
            .unwrap_or_else(|| panic!("mutation path {path:?}: {key} missing"));
    }
    node.as_mut_hash()
        .unwrap_or_else(|| panic!("mutation path {path:?}: parent is not a mapping"))
        .insert(Yaml::String(last.to_string()), value);
}

fn remove(doc: &mut Yaml, path: &[&str]) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut node = doc;
    for key in parents {
        node = node
            .as_mut_hash()
            .and_then(|h| h.get_mut(&Yaml::String(key.to_string())))
            .unwrap_or_else(|| panic!("mutation path {path:?}: {key} missing"));
    }
    let removed = node.as_mut_hash().and_then(|h| h.remove(&Yaml::String(last.to_string())));
    assert!(removed.is_some(), "mutation path {path:?}: nothing to remove");
}

/// A scalar as text (compose accepts numbers and booleans where it means strings).
fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Resolves compose interpolation the way `docker compose` does with no variables set:
/// `${X:-default}` and `${X-default}` become the default, `${X}` and `$X` become empty, `$$` is `$`.
fn interpolate(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| format!("unterminated ${{ in {s:?}"))?;
            let expr = &body[..end];
            let name_len = expr.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(expr.len());
            ensure!(name_len > 0, "empty variable name in {s:?}");
            let op = &expr[name_len..];
            if let Some(default) = op.strip_prefix(":-").or_else(|| op.strip_prefix('-')) {
                out.push_str(default);
            } else {
                ensure!(
                    op.is_empty() || op.starts_with(":?") || op.starts_with('?') || op.starts_with(":+"),
                    "unsupported interpolation ${{{expr}}} in {s:?}"
                );
            }
            rest = &body[end + 1..];
        } else {
            let name_len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            ensure!(name_len > 0, "a lone $ in {s:?} (write $$ for a literal dollar)");
            rest = &after[name_len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn service<'a>(doc: &'a Yaml, name: &str) -> Result<&'a Yaml, String> {
    let svc = &doc["services"][name];
    ensure!(svc.as_hash().is_some(), "docker-compose.yml has no service {name:?}");
    Ok(svc)
}

/// A string or a list of scalars, as a list of strings.
fn str_list(y: &Yaml) -> Option<Vec<String>> {
    match y {
        Yaml::Array(items) => items.iter().map(scalar).collect(),
        other => scalar(other).map(|s| vec![s]),
    }
}

fn profiles(svc: &Yaml) -> Vec<String> {
    str_list(&svc["profiles"]).unwrap_or_default()
}

/// `environment:` as a map, from either the mapping or the `KEY=VALUE` list form.
fn environment(svc: &Yaml) -> Result<BTreeMap<String, String>, String> {
    let mut env = BTreeMap::new();
    match &svc["environment"] {
        Yaml::BadValue | Yaml::Null => {}
        Yaml::Hash(h) => {
            for (k, v) in h {
                let k = scalar(k).ok_or("an environment key is not a scalar")?;
                env.insert(k, scalar(v).unwrap_or_default());
            }
        }
        Yaml::Array(items) => {
            for item in items {
                let item = scalar(item).ok_or("an environment entry is not a scalar")?;
                let (k, v) = item.split_once('=').unwrap_or((&item, ""));
                env.insert(k.to_string(), v.to_string());
            }
        }
        other => return Err(format!("environment is neither a map nor a list: {other:?}")),
    }
    Ok(env)
}

/// `volumes:` of a service as (source, target) pairs, short or long syntax.
fn mounts(svc: &Yaml) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for v in svc["volumes"].as_vec().map(Vec::as_slice).unwrap_or_default() {
        if let Some(short) = v.as_str() {
            let parts: Vec<&str> = short.split(':').collect();
            match parts.as_slice() {
                [target] => out.push((String::new(), target.to_string())),
                [source, target, ..] => out.push((source.to_string(), target.to_string())),
                [] => unreachable!(),
            }
        } else if v.as_hash().is_some() {
            let source = v["source"].as_str().unwrap_or_default().to_string();
            let target = v["target"].as_str().ok_or("a long-syntax volume has no target")?.to_string();
            out.push((source, target));
        } else {
            return Err(format!("a volume entry is neither a string nor a mapping: {v:?}"));
        }
    }
    Ok(out)
}

/// `depends_on:` as (service, condition); the list form means `service_started`.
fn depends_on(svc: &Yaml) -> Result<Vec<(String, String)>, String> {
    match &svc["depends_on"] {
        Yaml::BadValue | Yaml::Null => Ok(Vec::new()),
        Yaml::Array(items) => items
            .iter()
            .map(|i| scalar(i).map(|n| (n, "service_started".to_string())).ok_or("bad depends_on entry".into()))
            .collect(),
        Yaml::Hash(h) => h
            .iter()
            .map(|(k, v)| {
                let name = scalar(k).ok_or("bad depends_on key")?;
                let cond = v["condition"].as_str().unwrap_or("service_started").to_string();
                Ok((name, cond))
            })
            .collect(),
        other => Err(format!("depends_on is neither a list nor a map: {other:?}")),
    }
}

fn depends_on_with(svc: &Yaml, target: &str, condition: &str) -> bool {
    depends_on(svc).unwrap_or_default().iter().any(|(n, c)| n == target && c == condition)
}

fn healthcheck_disabled(svc: &Yaml) -> bool {
    let hc = &svc["healthcheck"];
    hc["disable"].as_bool() == Some(true)
        || str_list(&hc["test"]).is_some_and(|t| t.first().map(String::as_str) == Some("NONE"))
}

/// The healthcheck command as words (`CMD` list, `CMD-SHELL` list or plain string).
fn healthcheck_words(svc: &Yaml) -> Option<Vec<String>> {
    let test = str_list(&svc["healthcheck"]["test"])?;
    let words = match test.first().map(String::as_str) {
        Some("CMD") => test[1..].to_vec(),
        Some("CMD-SHELL") => test[1..].join(" ").split_whitespace().map(str::to_string).collect(),
        Some("NONE") | None => return None,
        Some(_) if test.len() == 1 => test[0].split_whitespace().map(str::to_string).collect(),
        Some(_) => return None,
    };
    Some(words)
}

fn contains_seq(haystack: &[String], needle: &[&str]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w.iter().zip(needle).all(|(a, b)| a == b))
}

/// (user, password, host, port, database) of a `postgres://` URL.
fn pg_url_parts(url: &str) -> Result<(String, String, String, u16, String), String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| format!("DATABASE_URL {url:?} is not a postgres:// URL"))?;
    let (creds, hostpart) = rest.rsplit_once('@').unwrap_or(("", rest));
    let (user, password) = creds.split_once(':').unwrap_or((creds, ""));
    let (authority, db) = hostpart.split_once('/').unwrap_or((hostpart, ""));
    let db = db.split('?').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("bad port in DATABASE_URL {url:?}"))?),
        None => (authority, 5432),
    };
    Ok((user.into(), password.into(), host.into(), port, db.into()))
}

// ---------------------------------------------------------------------------------------------
// docker-compose.yml checks
// ---------------------------------------------------------------------------------------------

/// The four services exist; the stack's core starts by default, the extras only under a profile.
fn check_services_and_profiles(doc: &Yaml) -> Check {
    for name in ["control-tower", "postgres", "worker", "redis"] {
        service(doc, name)?;
    }
    for name in ["control-tower", "postgres"] {
        let p = profiles(service(doc, name)?);
        ensure!(p.is_empty(), "{name} must start with a plain `docker compose up`, but has profiles {p:?}");
    }
    let worker = profiles(service(doc, "worker")?);
    ensure!(worker.iter().any(|p| p == "workers"), "worker must be under the `workers` profile, has {worker:?}");
    let redis = profiles(service(doc, "redis")?);
    ensure!(!redis.is_empty(), "redis is unused by v0 and must only start under a profile, has none");
    // A default service depending on a profiled one would drag it in (or fail): forbid it.
    let services = doc["services"].as_hash().ok_or("services is not a mapping")?;
    for (name, svc) in services {
        let name = scalar(name).unwrap_or_default();
        if !profiles(svc).is_empty() {
            continue;
        }
        for (dep, _) in depends_on(svc)? {
            let dep_profiles = profiles(service(doc, &dep)?);
            ensure!(
                dep_profiles.is_empty(),
                "{name} starts by default but depends on {dep}, which only runs under {dep_profiles:?}"
            );
        }
    }
    Ok(())
}

/// DATABASE_URL of `svc` points at the postgres service, with its user, password and database.
fn check_database_url(doc: &Yaml, svc_name: &str) -> Check {
    let env = environment(service(doc, svc_name)?)?;
    let url = interpolate(env.get("DATABASE_URL").ok_or_else(|| format!("{svc_name} sets no DATABASE_URL"))?)?;
    let (user, password, host, port, db) = pg_url_parts(&url)?;
    ensure!(host == "postgres", "{svc_name}'s DATABASE_URL host is {host:?}, not the `postgres` service");
    ensure!(port == 5432, "{svc_name}'s DATABASE_URL port is {port}; the postgres service listens on 5432");
    let pg = environment(service(doc, "postgres")?)?;
    for (var, got) in [("POSTGRES_USER", &user), ("POSTGRES_PASSWORD", &password), ("POSTGRES_DB", &db)] {
        let want = pg.get(var).map(|v| interpolate(v)).transpose()?.unwrap_or_default();
        ensure!(&want == got, "{svc_name}'s DATABASE_URL has {got:?} where postgres's {var} is {want:?}");
    }
    Ok(())
}

fn check_built_from_dockerfile(doc: &Yaml, svc_name: &str) -> Check {
    let build = &service(doc, svc_name)?["build"];
    let (context, dockerfile) = match build {
        Yaml::String(ctx) => (ctx.clone(), "Dockerfile".to_string()),
        Yaml::Hash(_) => (
            build["context"].as_str().unwrap_or(".").to_string(),
            build["dockerfile"].as_str().unwrap_or("Dockerfile").to_string(),
        ),
        _ => return Err(format!("{svc_name} is not built (no build:)")),
    };
    let path = repo_file(&context).join(&dockerfile);
    ensure!(
        path.canonicalize().ok() == repo_file("docker/Dockerfile").canonicalize().ok(),
        "{svc_name} is built from {context:?} + {dockerfile:?}, not docker/Dockerfile with the repository as context"
    );
    Ok(())
}

/// Whether `svc_name` runs the daemon's image: it builds docker/Dockerfile, or it runs the tag
/// that control-tower builds from it.
fn runs_daemon_image(doc: &Yaml, svc_name: &str) -> bool {
    if check_built_from_dockerfile(doc, svc_name).is_ok() {
        return true;
    }
    let (Ok(svc), Ok(ct)) = (service(doc, svc_name), service(doc, "control-tower")) else { return false };
    check_built_from_dockerfile(doc, "control-tower").is_ok()
        && !ct["image"].is_badvalue()
        && svc["image"] == ct["image"]
}

fn check_logs_mount(doc: &Yaml, svc_name: &str) -> Check {
    let m = mounts(service(doc, svc_name)?)?;
    ensure!(
        m.iter().any(|(s, t)| s.trim_end_matches('/') == HOST_LOGS && t.trim_end_matches('/') == TRACE_DIR),
        "{svc_name} must mount {HOST_LOGS} at {TRACE_DIR}; its volumes are {m:?}"
    );
    let env = environment(service(doc, svc_name)?)?;
    if let Some(dir) = env.get("JCT_TRACE_DIR") {
        ensure!(dir == TRACE_DIR, "{svc_name} sets JCT_TRACE_DIR={dir}, but {HOST_LOGS} is mounted at {TRACE_DIR}");
    }
    Ok(())
}

fn check_control_tower(doc: &Yaml) -> Check {
    let ct = service(doc, "control-tower")?;
    check_built_from_dockerfile(doc, "control-tower")?;
    ensure!(
        ct["image"].as_str().is_some_and(|i| !i.is_empty()),
        "control-tower must name the image it builds (image:), so that worker can run the same one"
    );
    check_database_url(doc, "control-tower")?;
    check_logs_mount(doc, "control-tower")?;
    ensure!(
        depends_on_with(ct, "postgres", "service_healthy"),
        "control-tower must depend on postgres with condition service_healthy; has {:?}",
        depends_on(ct)?
    );
    let ports = str_list(&ct["ports"]).unwrap_or_default();
    ensure!(
        ports.iter().any(|p| p.rsplit(':').next().map(|t| t.split('/').next() == Some("8000")) == Some(true)),
        "control-tower must publish container port 8000; ports are {ports:?}"
    );
    ensure!(!healthcheck_disabled(ct), "control-tower's healthcheck is disabled");
    let words = healthcheck_words(ct).ok_or("control-tower has no healthcheck test")?;
    ensure!(
        contains_seq(&words, &[BINARY, "healthcheck"]),
        "control-tower's healthcheck must run `{BINARY} healthcheck`, runs {words:?}"
    );
    let restart = ct["restart"].as_str().unwrap_or("no");
    ensure!(
        ["always", "unless-stopped", "on-failure"].contains(&restart) || restart.starts_with("on-failure:"),
        "control-tower needs a restart policy, has {restart:?}"
    );
    ensure!(
        ct["command"].is_badvalue() || str_list(&ct["command"]) == Some(vec!["serve".into()]),
        "control-tower must run `serve` (API and worker), runs {:?}",
        ct["command"]
    );
    Ok(())
}

fn check_postgres(doc: &Yaml) -> Check {
    let pg = service(doc, "postgres")?;
    let image = pg["image"].as_str().unwrap_or_default();
    ensure!(image.starts_with("postgres:"), "postgres must use the official postgres image, uses {image:?}");
    let words = healthcheck_words(pg).ok_or("postgres has no healthcheck test")?;
    ensure!(words.iter().any(|w| w == "pg_isready"), "postgres's healthcheck must run pg_isready, runs {words:?}");
    let m = mounts(pg)?;
    let data = m
        .iter()
        .find(|(_, t)| t.trim_end_matches('/') == "/var/lib/postgresql/data")
        .ok_or_else(|| format!("postgres keeps no volume at /var/lib/postgresql/data; volumes are {m:?}"))?;
    let name = &data.0;
    ensure!(
        !name.is_empty() && !name.starts_with('.') && !name.starts_with('/') && !name.starts_with('~'),
        "postgres's data must be a named volume, is {name:?}"
    );
    ensure!(
        doc["volumes"].as_hash().is_some_and(|v| v.contains_key(&Yaml::String(name.clone()))),
        "postgres's named volume {name:?} is not declared under the top-level volumes:"
    );
    Ok(())
}

fn check_worker(doc: &Yaml) -> Check {
    let w = service(doc, "worker")?;
    ensure!(
        runs_daemon_image(doc, "worker"),
        "worker must run the image control-tower builds from docker/Dockerfile: {:?} vs {:?}",
        w["image"],
        service(doc, "control-tower")?["image"]
    );
    check_database_url(doc, "worker")?;
    check_logs_mount(doc, "worker")?;
    let command = str_list(&w["command"]);
    ensure!(command == Some(vec!["worker".into()]), "worker must run the `worker` subcommand, runs {command:?}");
    ensure!(w["entrypoint"].is_badvalue(), "worker must keep the image's entrypoint (the binary); it overrides it");
    ensure!(
        healthcheck_disabled(w),
        "worker has no HTTP listener: its healthcheck must be disabled (the image's HTTP one would always fail), is {:?}",
        w["healthcheck"]
    );
    ensure!(w["ports"].is_badvalue(), "worker has no HTTP listener and must publish no ports");
    ensure!(
        w["container_name"].is_badvalue(),
        "worker must not set container_name, or `--scale worker=N` cannot create N containers"
    );
    ensure!(
        depends_on_with(w, "postgres", "service_healthy"),
        "worker must depend on postgres with condition service_healthy; has {:?}",
        depends_on(w)?
    );
    Ok(())
}

/// Whether service `name` is a root one-shot that runs `chown <user> /app/logs` on the ./logs mount.
fn chowns_logs_to(doc: &Yaml, name: &str, user: &str) -> bool {
    let Ok(s) = service(doc, name) else { return false };
    let argv: Vec<String> = [str_list(&s["entrypoint"]), str_list(&s["command"])]
        .into_iter()
        .flatten()
        .flatten()
        .map(|w| interpolate(&w).unwrap_or_default())
        .collect();
    argv.first().map(String::as_str) == Some("chown")
        && argv.iter().any(|a| a == user)
        && argv.iter().any(|a| a.trim_end_matches('/') == TRACE_DIR)
        && mounts(s).unwrap_or_default().iter().any(|(src, t)| src == HOST_LOGS && t == TRACE_DIR)
        && matches!(s["user"].as_str(), Some("0") | Some("0:0") | Some("root"))
}

/// The daemons refuse to start when JCT_TRACE_DIR is not writable, and a bind mount keeps the
/// host's ownership (root, when the engine creates ./logs). Every service that writes traces to
/// the ./logs bind mount must run as a non-root user AND depend on a one-shot service that
/// completed a `chown` of the mount to exactly that user.
fn check_logs_writable(doc: &Yaml) -> Check {
    let services = doc["services"].as_hash().ok_or("services is not a mapping")?;
    let mut writers = 0;
    for (name, svc) in services {
        let name = scalar(name).unwrap_or_default();
        let writes_logs = mounts(svc)?.iter().any(|(s, t)| s == HOST_LOGS && t == TRACE_DIR);
        let is_daemon = runs_daemon_image(doc, &name) && svc["entrypoint"].is_badvalue();
        if !(writes_logs && is_daemon) {
            continue;
        }
        writers += 1;
        let user = interpolate(svc["user"].as_str().ok_or_else(|| {
            format!("{name} writes {HOST_LOGS} but sets no user: the chown below needs to know whom to give it to")
        })?)?;
        let uid = user.split(':').next().unwrap_or_default();
        ensure!(uid != "0" && uid != "root" && !uid.is_empty(), "{name} runs as {user:?}; it must not run as root");
        let init = depends_on(svc)?
            .into_iter()
            .filter(|(_, c)| c == "service_completed_successfully")
            .find(|(n, _)| chowns_logs_to(doc, n, &user));
        ensure!(
            init.is_some(),
            "{name} runs as {user:?} on the {HOST_LOGS} bind mount, but depends (service_completed_successfully) on \
             no root one-shot service that runs `chown {user} {TRACE_DIR}` on that same mount: it would crash-loop \
             on a logs directory its user cannot write"
        );
    }
    ensure!(writers >= 2, "expected control-tower and worker to write traces to {HOST_LOGS}, found {writers}");
    Ok(())
}

/// What `docker compose config` would refuse, checked without an engine: unknown top-level or
/// service keys (typos such as `depends-on`), bad depends_on conditions or targets, undeclared named
/// volumes, malformed `${...}` interpolation, the obsolete `version:` key.
fn check_compose_schema(doc: &Yaml) -> Check {
    const TOP: &[&str] = &["name", "services", "volumes", "networks", "configs", "secrets", "include"];
    // The compose specification's service attributes.
    const SERVICE: &str = "\
        annotations attach build blkio_config cap_add cap_drop cgroup cgroup_parent command configs \
        container_name cpu_count cpu_percent cpu_shares cpu_period cpu_quota cpu_rt_runtime \
        cpu_rt_period cpus cpuset credential_spec depends_on deploy develop device_cgroup_rules devices \
        dns dns_opt dns_search domainname entrypoint env_file environment expose extends external_links \
        extra_hosts gpus group_add healthcheck hostname image init ipc isolation labels links logging \
        mac_address mem_limit mem_reservation mem_swappiness memswap_limit network_mode networks \
        oom_kill_disable oom_score_adj pid pids_limit platform ports post_start pre_stop privileged \
        profiles pull_policy read_only restart runtime scale secrets security_opt shm_size stdin_open \
        stop_grace_period stop_signal storage_opt sysctls tmpfs tty ulimits user userns_mode uts volumes \
        volumes_from working_dir";
    const HEALTHCHECK: &[&str] =
        &["test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"];
    const CONDITIONS: &[&str] = &["service_started", "service_healthy", "service_completed_successfully"];
    const RESTART: &[&str] = &["no", "always", "unless-stopped", "on-failure"];

    let top = doc.as_hash().ok_or("docker-compose.yml is not a mapping")?;
    for key in top.keys() {
        let key = scalar(key).unwrap_or_default();
        ensure!(key != "version", "the top-level `version:` key is obsolete in the compose spec; drop it");
        ensure!(TOP.contains(&key.as_str()) || key.starts_with("x-"), "unknown top-level key {key:?}");
    }
    let declared_volumes: BTreeSet<String> =
        doc["volumes"].as_hash().map(|h| h.keys().filter_map(scalar).collect()).unwrap_or_default();
    let services = doc["services"].as_hash().ok_or("services is not a mapping")?;
    ensure!(!services.is_empty(), "no services");
    for (name, svc) in services {
        let name = scalar(name).unwrap_or_default();
        let h = svc.as_hash().ok_or_else(|| format!("service {name} is not a mapping"))?;
        for key in h.keys() {
            let key = scalar(key).unwrap_or_default();
            ensure!(
                SERVICE.split_whitespace().any(|k| k == key) || key.starts_with("x-"),
                "service {name}: unknown key {key:?}"
            );
        }
        ensure!(
            !svc["image"].is_badvalue() || !svc["build"].is_badvalue(),
            "service {name} has neither image nor build"
        );
        if let Some(hc) = svc["healthcheck"].as_hash() {
            for key in hc.keys() {
                let key = scalar(key).unwrap_or_default();
                ensure!(HEALTHCHECK.contains(&key.as_str()), "service {name}: unknown healthcheck key {key:?}");
            }
        }
        for (dep, cond) in depends_on(svc)? {
            ensure!(CONDITIONS.contains(&cond.as_str()), "service {name}: unknown depends_on condition {cond:?}");
            ensure!(services.contains_key(&Yaml::String(dep.clone())), "service {name} depends on unknown {dep:?}");
            ensure!(dep != name, "service {name} depends on itself");
        }
        if let Some(restart) = scalar(&svc["restart"]) {
            ensure!(
                RESTART.contains(&restart.as_str()) || restart.starts_with("on-failure:"),
                "service {name}: unknown restart policy {restart:?} (quote \"no\")"
            );
        }
        for (source, _) in mounts(svc)? {
            let named = !(source.is_empty()
                || source.starts_with('.')
                || source.starts_with('/')
                || source.starts_with('~')
                || source.starts_with('$'));
            ensure!(
                !named || declared_volumes.contains(&source),
                "service {name} mounts the named volume {source:?}, which is not declared under volumes:"
            );
        }
    }
    // Compose's bake builder builds services in parallel: two services building one tag both
    // export it, and a first build fails ("image …: already exists"). One builder per tag; the
    // others run it with `pull_policy: never`, which only works if some service builds it.
    let mut built: BTreeMap<String, String> = BTreeMap::new();
    for (name, svc) in services {
        if let (false, Some(image)) = (svc["build"].is_badvalue(), svc["image"].as_str()) {
            let name = scalar(name).unwrap_or_default();
            if let Some(other) = built.insert(image.to_string(), name.clone()) {
                return Err(format!(
                    "{other} and {name} both build the image {image:?}: Compose (bake) exports it twice at once and \
                     a first build fails; build it in one service and use `image:` in the other"
                ));
            }
        }
    }
    for (name, svc) in services {
        if svc["pull_policy"].as_str() == Some("never") && svc["build"].is_badvalue() {
            let image = svc["image"].as_str().unwrap_or_default();
            ensure!(
                built.contains_key(image),
                "service {} never pulls {image:?}, but no service builds it",
                scalar(name).unwrap_or_default()
            );
        }
    }
    // Every string anywhere must interpolate cleanly.
    fn walk(y: &Yaml) -> Check {
        match y {
            Yaml::String(s) => interpolate(s).map(|_| ()),
            Yaml::Array(items) => items.iter().try_for_each(walk),
            Yaml::Hash(h) => h.iter().try_for_each(|(k, v)| walk(k).and_then(|_| walk(v))),
            _ => Ok(()),
        }
    }
    walk(doc)
}

// ---------------------------------------------------------------------------------------------
// docker/Dockerfile helpers
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Instr {
    /// The instruction keyword, upper case.
    op: String,
    args: String,
    /// Index into `Dockerfile::stages`.
    stage: usize,
}

#[derive(Debug, Clone)]
struct Stage {
    image: String,
    name: Option<String>,
}

#[derive(Debug, Clone)]
struct Dockerfile {
    instrs: Vec<Instr>,
    stages: Vec<Stage>,
}

impl Dockerfile {
    /// Logical lines: `\` continuations joined, comment lines (also inside a continuation) and
    /// blank lines dropped.
    fn parse(text: &str) -> Dockerfile {
        let mut logical = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || trimmed.is_empty() {
                continue;
            }
            match line.trim_end().strip_suffix('\\') {
                Some(head) => {
                    current.push_str(head);
                    current.push(' ');
                }
                None => {
                    current.push_str(line);
                    logical.push(std::mem::take(&mut current));
                }
            }
        }
        if !current.trim().is_empty() {
            logical.push(current);
        }
        let mut df = Dockerfile { instrs: Vec::new(), stages: Vec::new() };
        for line in logical {
            let line = line.trim();
            let (op, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let op = op.to_ascii_uppercase();
            let args = args.split_whitespace().collect::<Vec<_>>().join(" ");
            if op == "FROM" {
                let words: Vec<&str> = args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
                let name = match words.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                    _ => None,
                };
                df.stages.push(Stage { image: words.first().unwrap_or(&"").to_string(), name });
            }
            let stage = df.stages.len().saturating_sub(1);
            df.instrs.push(Instr { op, args, stage });
        }
        df
    }

    fn load() -> Dockerfile {
        Dockerfile::parse(&read("docker/Dockerfile"))
    }

    fn runtime(&self) -> usize {
        self.stages.len().saturating_sub(1)
    }

    fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
    }

    /// Positions (into `instrs`) of `op` instructions in `stage`.
    fn find(&self, stage: usize, op: &str) -> Vec<usize> {
        (0..self.instrs.len()).filter(|&i| self.instrs[i].stage == stage && self.instrs[i].op == op).collect()
    }

    fn last(&self, stage: usize, op: &str) -> Option<&Instr> {
        self.find(stage, op).last().map(|&i| &self.instrs[i])
    }

    /// `ENV` values of a stage, both `K=V ...` and legacy `K V` forms.
    fn env(&self, stage: usize) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for i in self.find(stage, "ENV") {
            let args = &self.instrs[i].args;
            if args.split_whitespace().next().is_some_and(|w| w.contains('=')) {
                for pair in args.split_whitespace() {
                    if let Some((k, v)) = pair.split_once('=') {
                        env.insert(k.to_string(), v.trim_matches('"').to_string());
                    }
                }
            } else if let Some((k, v)) = args.split_once(' ') {
                env.insert(k.to_string(), v.to_string());
            }
        }
        env
    }
}

/// Exec form (`["a", "b"]`) or shell form (`a b`) as words.
fn words(args: &str) -> Vec<String> {
    let args = args.trim();
    if args.starts_with('[') {
        serde_json::from_str::<Vec<String>>(args).unwrap_or_else(|_| vec![format!("<bad JSON: {args}>")])
    } else {
        args.split_whitespace().map(str::to_string).collect()
    }
}

/// Target files Cargo.toml declares explicitly (`[[bench]]`, `[[test]]`, `[[example]]`): the
/// dependency layer must stub each, or cargo refuses the manifest.
fn declared_targets(cargo_toml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut section: Option<(&str, Option<String>, Option<String>)> = None;
    let flush = |s: Option<(&str, Option<String>, Option<String>)>, out: &mut Vec<String>| {
        if let Some((dir, name, path)) = s {
            if let Some(p) = path.or_else(|| name.map(|n| format!("{dir}/{n}.rs"))) {
                out.push(p);
            }
        }
    };
    for line in cargo_toml.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            flush(section.take(), &mut out);
            section = match line {
                "[[bench]]" => Some(("benches", None, None)),
                "[[test]]" => Some(("tests", None, None)),
                "[[example]]" => Some(("examples", None, None)),
                _ => None,
            };
        } else if let Some((_, name, path)) = section.as_mut() {
            if let Some((k, v)) = line.split_once('=') {
                let v = v.trim().trim_matches('"').to_string();
                match k.trim() {
                    "name" => *name = Some(v),
                    "path" => *path = Some(v),
                    _ => {}
                }
            }
        }
    }
    flush(section, &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// docker/Dockerfile checks
// ---------------------------------------------------------------------------------------------

/// A rust builder whose dependency layer (manifest + stubs) is built before the sources arrive,
/// then the real sources and migrations, touched, and rebuilt.
fn check_builder(df: &Dockerfile, cargo_toml: &str) -> Check {
    ensure!(df.stages.len() >= 2, "the Dockerfile must be multi-stage, has {} stage(s)", df.stages.len());
    let b = df.stage_index("builder").ok_or("no stage named `builder`")?;
    ensure!(b != df.runtime(), "the builder must not be the final (runtime) stage");
    let image = &df.stages[b].image;
    ensure!(image.starts_with("rust:"), "the builder must use an official rust image, uses {image:?}");
    let at = |pred: &dyn Fn(&Instr) -> bool| -> Vec<usize> {
        (0..df.instrs.len()).filter(|&i| df.instrs[i].stage == b && pred(&df.instrs[i])).collect()
    };
    let manifest = at(&|i| i.op == "COPY" && i.args.contains("Cargo.toml") && i.args.contains("Cargo.lock"));
    let builds = at(&|i| i.op == "RUN" && i.args.contains("cargo build"));
    let copy_src = at(&|i| i.op == "COPY" && words(&i.args).first().is_some_and(|w| w.trim_end_matches('/') == "src"));
    let copy_mig =
        at(&|i| i.op == "COPY" && words(&i.args).first().is_some_and(|w| w.trim_end_matches('/') == "migrations"));
    let (&manifest, &src) = (
        manifest.first().ok_or("the builder never copies Cargo.toml and Cargo.lock together")?,
        copy_src.first().ok_or("the builder never copies src/")?,
    );
    let mig = *copy_mig
        .first()
        .ok_or("the builder never copies migrations/ (embed_migrations! reads them at compile time)")?;
    ensure!(
        builds.iter().any(|&i| manifest < i && i < src),
        "no cached dependency layer: no `cargo build` between copying the manifest and copying src/"
    );
    let last_build = *builds.last().ok_or("the builder never runs cargo build")?;
    ensure!(src < last_build && mig < last_build, "the final cargo build must come after copying src/ and migrations/");
    for &i in &builds {
        let args = &df.instrs[i].args;
        ensure!(
            args.contains("--release") && args.contains("--locked"),
            "cargo build must use --release --locked: {args}"
        );
    }
    ensure!(
        (src..=last_build).any(|i| {
            let a = &df.instrs[i];
            a.op == "RUN" && a.args.contains("touch") && a.args.contains("src/main.rs") && a.args.contains("src/lib.rs")
        }),
        "after COPY src/ the real src/main.rs and src/lib.rs must be touched before the rebuild, or cargo keeps \
         the stub's artifacts (COPY keeps the older modification times)"
    );
    let stubs: String = (manifest..src).map(|i| df.instrs[i].args.as_str()).collect::<Vec<_>>().join(" ");
    for needed in ["src/main.rs", "src/lib.rs"].into_iter().map(String::from).chain(declared_targets(cargo_toml)) {
        ensure!(
            stubs.contains(&needed),
            "the dependency layer must create a stub {needed} (Cargo.toml needs it), before COPY src/"
        );
    }
    Ok(())
}

/// A slim Debian runtime holding the built binary and nothing but CA certificates.
fn check_runtime(df: &Dockerfile) -> Check {
    let r = df.runtime();
    let image = &df.stages[r].image;
    ensure!(
        image.starts_with("debian:") && image.contains("slim"),
        "the runtime must be a slim Debian image, is {image:?}"
    );
    let copies = df.find(r, "COPY");
    let binary = copies.iter().map(|&i| words(&df.instrs[i].args)).find(|w| {
        w.iter().any(|f| f.eq_ignore_ascii_case("--from=builder"))
            && w.iter().any(|s| s.ends_with(&format!("/target/release/{BINARY}")))
    });
    let binary = binary.ok_or_else(|| format!("the runtime never copies /target/release/{BINARY} from the builder"))?;
    let dest = binary.last().cloned().unwrap_or_default();
    ensure!(
        dest == format!("/usr/local/bin/{BINARY}") || dest.trim_end_matches('/') == "/usr/local/bin",
        "the binary must land on PATH at /usr/local/bin/{BINARY}, lands at {dest:?}"
    );
    for i in df.find(r, "RUN") {
        for cmd in df.instrs[i].args.split("&&") {
            let w: Vec<&str> = cmd.split_whitespace().collect();
            if let Some(p) = w.iter().position(|&x| x == "install") {
                if w[..p].iter().any(|x| x.starts_with("apt")) {
                    let pkgs: Vec<&str> = w[p + 1..].iter().copied().filter(|x| !x.starts_with('-')).collect();
                    ensure!(
                        pkgs == ["ca-certificates"],
                        "the runtime should install only ca-certificates, installs {pkgs:?}"
                    );
                }
            }
        }
    }
    Ok(())
}

/// Runs as a non-root user that the image creates.
fn check_user(df: &Dockerfile) -> Check {
    let r = df.runtime();
    let user = df.last(r, "USER").ok_or("the runtime stage has no USER: it would run as root")?;
    let name = user.args.split(':').next().unwrap_or_default().trim();
    ensure!(!name.is_empty() && name != "root" && name != "0", "USER {} is root", user.args);
    let created = df.find(r, "RUN").iter().any(|&i| {
        let a = &df.instrs[i].args;
        a.contains("useradd") && a.split_whitespace().any(|w| w == name || w == format!("--uid={name}"))
    });
    ensure!(created, "USER {name} is never created with useradd in the runtime stage");
    Ok(())
}

/// The trace directory is a VOLUME, created and owned by the runtime user before the VOLUME line
/// (so a fresh volume is seeded writable); JCT_TRACE_DIR points at it; port 8000 is exposed.
fn check_logs_volume(df: &Dockerfile) -> Check {
    let r = df.runtime();
    let env = df.env(r);
    ensure!(
        env.get("JCT_TRACE_DIR").map(String::as_str) == Some(TRACE_DIR),
        "ENV JCT_TRACE_DIR must be {TRACE_DIR}, is {:?}",
        env.get("JCT_TRACE_DIR")
    );
    if let Some(bind) = env.get("JCT_BIND") {
        ensure!(bind.ends_with(":8000"), "ENV JCT_BIND={bind} disagrees with EXPOSE 8000");
    }
    let exposes: Vec<String> = df.find(r, "EXPOSE").iter().flat_map(|&i| words(&df.instrs[i].args)).collect();
    ensure!(
        exposes.iter().any(|p| p.split('/').next() == Some("8000")),
        "the runtime must EXPOSE 8000, exposes {exposes:?}"
    );
    let volume = *df
        .find(r, "VOLUME")
        .iter()
        .find(|&&i| words(&df.instrs[i].args).iter().any(|v| v.trim_end_matches('/') == TRACE_DIR))
        .ok_or_else(|| format!("no VOLUME {TRACE_DIR} in the runtime stage"))?;
    let user = df.last(r, "USER").map(|u| u.args.clone()).unwrap_or_default();
    let uid = user.split(':').next().unwrap_or_default().to_string();
    // The names the USER is known by: the USER value and, from useradd, the login name and uid.
    let mut owners = BTreeSet::from([uid.clone()]);
    for i in df.find(r, "RUN") {
        for cmd in df.instrs[i].args.split("&&") {
            let w: Vec<&str> = cmd.split_whitespace().collect();
            if w.first() != Some(&"useradd") {
                continue;
            }
            let login = w.last().filter(|x| !x.starts_with('-')).copied();
            let uid_arg = w.windows(2).find(|x| x[0] == "--uid" || x[0] == "-u").map(|x| x[1]);
            if let (Some(login), Some(u)) = (login, uid_arg) {
                if login == uid || u == uid {
                    owners.insert(login.to_string());
                    owners.insert(u.to_string());
                }
            }
        }
    }
    let prepared = df.find(r, "RUN").into_iter().any(|i| {
        let a = &df.instrs[i].args;
        let mkdir = a.split("&&").any(|c| c.contains("mkdir") && c.contains(TRACE_DIR));
        let chown = a.split("&&").any(|c| {
            let w: Vec<&str> = c.split_whitespace().collect();
            w.first() == Some(&"chown")
                && w.iter().any(|x| x.trim_end_matches('/') == TRACE_DIR)
                && w.iter().any(|x| owners.contains(x.split(':').next().unwrap_or_default()))
        });
        i < volume && mkdir && chown
    });
    ensure!(
        prepared,
        "{TRACE_DIR} must be created (mkdir) and chowned to the USER ({owners:?}) in a RUN before VOLUME {TRACE_DIR}: \
         otherwise a fresh volume is root-owned and the daemon cannot write its traces"
    );
    let after = df.instrs[volume..].iter().any(|i| i.stage == r && i.op == "RUN" && i.args.contains(TRACE_DIR));
    ensure!(!after, "a RUN touches {TRACE_DIR} after VOLUME {TRACE_DIR}; Docker discards such changes");
    Ok(())
}

/// HEALTHCHECK runs the binary's healthcheck subcommand; the binary is the ENTRYPOINT and `serve`
/// the default CMD (compose's `command: ["worker"]` relies on that).
fn check_entrypoint_and_healthcheck(df: &Dockerfile) -> Check {
    let r = df.runtime();
    let hc = df.last(r, "HEALTHCHECK").ok_or("the runtime has no HEALTHCHECK")?;
    let cmd = hc
        .args
        .split_once("CMD ")
        .map(|(_, c)| words(c))
        .ok_or_else(|| format!("HEALTHCHECK without CMD: {}", hc.args))?;
    ensure!(contains_seq(&cmd, &[BINARY, "healthcheck"]), "HEALTHCHECK must run `{BINARY} healthcheck`, runs {cmd:?}");
    let entrypoint = df.last(r, "ENTRYPOINT").map(|i| words(&i.args)).unwrap_or_default();
    ensure!(
        entrypoint == [BINARY] || entrypoint == [format!("/usr/local/bin/{BINARY}")],
        "ENTRYPOINT must be the binary alone (exec form), is {entrypoint:?}"
    );
    let cmd = df.last(r, "CMD").map(|i| words(&i.args)).unwrap_or_default();
    ensure!(cmd == ["serve"], "CMD must be [\"serve\"], is {cmd:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

fn pass(check: Check) {
    if let Err(e) = check {
        panic!("{e}");
    }
}

#[test]
fn compose_validates_without_a_docker_engine() {
    // Deliberately no `docker compose config`: there is no engine here (and no test may need one).
    pass(check_compose_schema(&load_compose()));
}

#[test]
fn compose_has_the_services_and_profiles() {
    pass(check_services_and_profiles(&load_compose()));
}

#[test]
fn compose_control_tower_is_wired_to_postgres() {
    pass(check_control_tower(&load_compose()));
}

#[test]
fn compose_postgres_has_healthcheck_and_named_volume() {
    pass(check_postgres(&load_compose()));
}

#[test]
fn compose_worker_is_scalable_and_has_no_http_healthcheck() {
    pass(check_worker(&load_compose()));
}

#[test]
fn compose_logs_mount_is_writable_by_the_daemon_user() {
    pass(check_logs_writable(&load_compose()));
}

#[test]
fn dockerfile_builder_caches_dependencies() {
    pass(check_builder(&Dockerfile::load(), &read("Cargo.toml")));
}

#[test]
fn dockerfile_runtime_is_slim_and_holds_the_built_binary() {
    pass(check_runtime(&Dockerfile::load()));
}

#[test]
fn dockerfile_runs_as_a_non_root_user() {
    pass(check_user(&Dockerfile::load()));
}

#[test]
fn dockerfile_logs_volume_is_prepared_for_that_user() {
    pass(check_logs_volume(&Dockerfile::load()));
}

#[test]
fn dockerfile_entrypoint_cmd_and_healthcheck() {
    pass(check_entrypoint_and_healthcheck(&Dockerfile::load()));
}

#[test]
fn dockerignore_keeps_build_output_and_local_state_out_of_the_context() {
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(|l| l.trim().trim_start_matches('/').trim_end_matches('/').to_string())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for must in ["target", ".git", "logs", "*.db"] {
        assert!(ignored.iter().any(|l| l == must), ".dockerignore must exclude {must:?}; it lists {ignored:?}");
    }
    for needed in ["src", "migrations", "Cargo.toml", "Cargo.lock"] {
        assert!(
            !ignored.iter().any(|l| l == needed || l == "*" || l == "**"),
            ".dockerignore excludes {needed}, which the build needs"
        );
    }
}

/// One edit of the parsed compose file: set a dotted path to a YAML value, or remove it.
enum Edit {
    Set(&'static str, &'static str),
    Remove(&'static str),
}

/// One edit of the parsed Dockerfile.
enum DEdit {
    /// Replace text in the arguments of every `op` instruction (any stage); must change something.
    Replace(&'static str, &'static str, &'static str),
    /// Set the arguments of the runtime stage's last `op`.
    SetLast(&'static str, &'static str),
    /// Drop every `op` instruction whose arguments start with the prefix, in the given stage.
    Drop(Stg, &'static str, &'static str),
    /// Change the runtime stage's base image.
    RuntimeImage(&'static str),
    /// Keep only the first stage.
    SingleStage,
    /// Move the RUN that chowns the trace directory to just after the VOLUME line.
    ChownAfterVolume,
}

#[derive(Clone, Copy)]
enum Stg {
    Builder,
    Runtime,
}

fn apply(doc: &mut Yaml, edit: &Edit) {
    match edit {
        Edit::Set(path, value) => set(doc, &path.split('.').collect::<Vec<_>>(), yaml(value)),
        Edit::Remove(path) => remove(doc, &path.split('.').collect::<Vec<_>>()),
    }
}

fn apply_docker(df: &mut Dockerfile, edit: &DEdit) {
    let r = df.runtime();
    match *edit {
        DEdit::Replace(op, from, to) => {
            let mut changed = false;
            for i in df.instrs.iter_mut().filter(|i| i.op == op && i.args.contains(from)) {
                i.args = i.args.replace(from, to);
                changed = true;
            }
            assert!(changed, "mutation: no {op} contains {from:?}");
        }
        DEdit::SetLast(op, args) => {
            let i = *df.find(r, op).last().unwrap_or_else(|| panic!("mutation: no {op} in the runtime stage"));
            df.instrs[i].args = args.to_string();
        }
        DEdit::Drop(stage, op, prefix) => {
            let stage = match stage {
                Stg::Builder => df.stage_index("builder").expect("mutation: a builder stage"),
                Stg::Runtime => r,
            };
            let before = df.instrs.len();
            df.instrs.retain(|i| !(i.stage == stage && i.op == op && i.args.starts_with(prefix)));
            assert!(df.instrs.len() < before, "mutation: no {op} {prefix}… to drop");
        }
        DEdit::RuntimeImage(image) => df.stages[r].image = image.to_string(),
        DEdit::SingleStage => df.stages.truncate(1),
        DEdit::ChownAfterVolume => {
            let v = *df.find(r, "VOLUME").last().expect("mutation: a VOLUME");
            let c = df.find(r, "RUN").into_iter().find(|&i| df.instrs[i].args.contains("chown")).expect("a chown");
            let run = df.instrs.remove(c);
            df.instrs.insert(v, run);
        }
    }
}

/// Each check must fail on a broken variant of the real files, with a message naming the problem.
#[test]
fn checks_reject_broken_variants() {
    use DEdit::{ChownAfterVolume, Drop, Replace, RuntimeImage, SetLast, SingleStage};
    use Edit::{Remove, Set};
    type ComposeCase = (&'static str, fn(&Yaml) -> Check, &'static [Edit], &'static str);
    let compose_cases: &[ComposeCase] = &[
        ("worker missing", check_services_and_profiles, &[Remove("services.worker")], "no service \"worker\""),
        ("redis by default", check_services_and_profiles, &[Remove("services.redis.profiles")], "redis"),
        ("worker profile", check_services_and_profiles, &[Set("services.worker.profiles", "[x]")], "workers"),
        ("profiled core", check_services_and_profiles, &[Set("services.control-tower.profiles", "[x]")], "profiles"),
        (
            "default service depends on a profiled one",
            check_services_and_profiles,
            &[Set("services.postgres.depends_on", "[redis]")],
            "depends on redis",
        ),
        (
            "DATABASE_URL at localhost",
            check_control_tower,
            &[Set("services.control-tower.environment.DATABASE_URL", "postgres://jct:jct@localhost:5432/jct")],
            "\"localhost\"",
        ),
        (
            "DATABASE_URL, list form, at db",
            check_control_tower,
            &[Set("services.control-tower.environment", "[DATABASE_URL=postgres://jct:jct@db:5432/jct]")],
            "\"db\"",
        ),
        (
            "DATABASE_URL with another password",
            check_control_tower,
            &[Set("services.control-tower.environment.DATABASE_URL", "postgres://jct:nope@postgres:5432/jct")],
            "POSTGRES_PASSWORD",
        ),
        (
            "depends_on list form",
            check_control_tower,
            &[Set("services.control-tower.depends_on", "[postgres]")],
            "service_healthy",
        ),
        (
            "healthcheck by curl",
            check_control_tower,
            &[Set("services.control-tower.healthcheck.test", r#"["CMD-SHELL", "curl -f localhost:8000/health"]"#)],
            "healthcheck must run",
        ),
        ("no restart policy", check_control_tower, &[Remove("services.control-tower.restart")], "restart policy"),
        (
            "port 8000 unpublished",
            check_control_tower,
            &[Set("services.control-tower.ports", r#"["8080:8080"]"#)],
            "8000",
        ),
        (
            "logs elsewhere",
            check_control_tower,
            &[Set("services.control-tower.volumes", r#"["./logs:/logs"]"#)],
            "mount ./logs",
        ),
        ("other Dockerfile", check_control_tower, &[Set("services.control-tower.build", ".")], "docker/Dockerfile"),
        ("runs worker", check_control_tower, &[Set("services.control-tower.command", "[worker]")], "`serve`"),
        (
            "pg_isready",
            check_postgres,
            &[Set("services.postgres.healthcheck.test", r#"["CMD", "true"]"#)],
            "pg_isready",
        ),
        ("pgdata undeclared", check_postgres, &[Remove("volumes")], "not declared"),
        (
            "postgres on a bind mount",
            check_postgres,
            &[Set("services.postgres.volumes", r#"["./pg:/var/lib/postgresql/data"]"#)],
            "named volume",
        ),
        ("worker inherits the HTTP healthcheck", check_worker, &[Remove("services.worker.healthcheck")], "disabled"),
        (
            "worker with an HTTP healthcheck",
            check_worker,
            &[Set("services.worker.healthcheck", r#"{test: ["CMD", "devops-control-tower", "healthcheck"]}"#)],
            "disabled",
        ),
        ("worker runs serve", check_worker, &[Set("services.worker.command", "[serve]")], "`worker` subcommand"),
        (
            "worker container_name",
            check_worker,
            &[Set("services.worker.container_name", "jct-worker")],
            "container_name",
        ),
        ("worker port", check_worker, &[Set("services.worker.ports", r#"["8001:8000"]"#)], "no ports"),
        ("worker entrypoint", check_worker, &[Set("services.worker.entrypoint", "[sh]")], "entrypoint"),
        (
            "worker DATABASE_URL at 127.0.0.1",
            check_worker,
            &[Set("services.worker.environment.DATABASE_URL", "postgres://jct:jct@127.0.0.1/jct")],
            "\"127.0.0.1\"",
        ),
        (
            "worker on another image",
            check_worker,
            &[Set("services.worker.image", "other:1")],
            "image control-tower builds",
        ),
        ("control-tower image unnamed", check_control_tower, &[Remove("services.control-tower.image")], "image:"),
        (
            "worker builds the same tag too",
            check_compose_schema,
            &[Set("services.worker.build", "{context: ., dockerfile: docker/Dockerfile}")],
            "both build",
        ),
        (
            "never-pulled image nobody builds",
            check_compose_schema,
            &[Set("services.logs-init.image", "jct:other")],
            "no service builds it",
        ),
        ("daemon as root", check_logs_writable, &[Set("services.control-tower.user", r#""0:0""#)], "not run as root"),
        (
            "no chown before the daemons",
            check_logs_writable,
            &[
                Set("services.control-tower.depends_on", "{postgres: {condition: service_healthy}}"),
                Set("services.worker.depends_on", "{postgres: {condition: service_healthy}}"),
            ],
            "crash-loop",
        ),
        (
            "chown to another uid",
            check_logs_writable,
            &[Set("services.control-tower.user", r#""4242:4242""#)],
            "crash-loop",
        ),
        ("version key", check_compose_schema, &[Set("version", r#""3.8""#)], "version"),
        ("misspelt key", check_compose_schema, &[Set("services.worker.depends-on", "[postgres]")], "depends-on"),
        (
            "unknown condition",
            check_compose_schema,
            &[Set("services.control-tower.depends_on", "{postgres: {condition: healthy}}")],
            "condition",
        ),
        ("unknown dependency", check_compose_schema, &[Set("services.worker.depends_on", "[db]")], "unknown \"db\""),
        (
            "bad interpolation",
            check_compose_schema,
            &[Set("services.worker.user", r#""${JCT_UID:-1""#)],
            "unterminated",
        ),
        ("restart: no unquoted", check_compose_schema, &[Set("services.redis.restart", "false")], "restart policy"),
    ];

    let cargo = read("Cargo.toml");
    let extra_bench = format!("{cargo}\n[[bench]]\nname = \"claim\"\nharness = false\n");
    let builder = |d: &Dockerfile| check_builder(d, &cargo);
    let builder_extra_bench = |d: &Dockerfile| check_builder(d, &extra_bench);
    type DockerCase<'a> = (&'static str, &'a dyn Fn(&Dockerfile) -> Check, &'static [DEdit], &'static str);
    let docker_cases: &[DockerCase] = &[
        ("single stage", &builder, &[SingleStage], "multi-stage"),
        ("no dependency layer", &builder, &[Replace("COPY", "Cargo.toml Cargo.lock", "Cargo.toml")], "Cargo.lock"),
        ("migrations not copied", &builder, &[Drop(Stg::Builder, "COPY", "migrations")], "migrations"),
        ("sources not touched", &builder, &[Replace("RUN", "touch", "ls")], "touched"),
        ("bench stub missing", &builder, &[Replace("RUN", "benches/queue.rs", "benches/q.rs")], "benches/queue.rs"),
        ("new bench not stubbed", &builder_extra_bench, &[], "benches/claim.rs"),
        ("unlocked build", &builder, &[Replace("RUN", "--locked", "")], "--locked"),
        (
            "binary not copied",
            &check_runtime,
            &[Drop(Stg::Runtime, "COPY", "--from")],
            "/target/release/devops-control-tower",
        ),
        ("binary off PATH", &check_runtime, &[Replace("COPY", "/usr/local/bin/", "/opt/")], "/usr/local/bin"),
        ("fat runtime", &check_runtime, &[RuntimeImage("rust:1-bookworm")], "slim Debian"),
        (
            "runtime installs curl",
            &check_runtime,
            &[Replace("RUN", "ca-certificates", "ca-certificates curl")],
            "only ca-certificates",
        ),
        ("USER root", &check_user, &[SetLast("USER", "root")], "is root"),
        ("USER 0:0", &check_user, &[SetLast("USER", "0:0")], "is root"),
        ("no USER", &check_user, &[Drop(Stg::Runtime, "USER", "")], "no USER"),
        ("USER never created", &check_user, &[SetLast("USER", "20002")], "never created"),
        ("no logs VOLUME", &check_logs_volume, &[SetLast("VOLUME", r#"["/data"]"#)], "no VOLUME"),
        ("chown after VOLUME", &check_logs_volume, &[ChownAfterVolume], "before VOLUME"),
        (
            "logs owned by another",
            &check_logs_volume,
            &[Replace("RUN", "chown jct:jct", "chown nobody:nogroup")],
            "chowned to the USER",
        ),
        (
            "logs never created",
            &check_logs_volume,
            &[Replace("RUN", "mkdir -p /app/logs", "mkdir -p")],
            "created (mkdir)",
        ),
        ("EXPOSE 8080", &check_logs_volume, &[SetLast("EXPOSE", "8080")], "EXPOSE 8000"),
        (
            "JCT_TRACE_DIR elsewhere",
            &check_logs_volume,
            &[Replace("ENV", "JCT_TRACE_DIR=/app/logs", "JCT_TRACE_DIR=/tmp")],
            "JCT_TRACE_DIR",
        ),
        (
            "HEALTHCHECK by curl",
            &check_entrypoint_and_healthcheck,
            &[SetLast("HEALTHCHECK", "CMD curl -f http://localhost:8000/health || exit 1")],
            "HEALTHCHECK must run",
        ),
        ("no ENTRYPOINT", &check_entrypoint_and_healthcheck, &[Drop(Stg::Runtime, "ENTRYPOINT", "")], "ENTRYPOINT"),
        ("CMD worker", &check_entrypoint_and_healthcheck, &[SetLast("CMD", r#"["worker"]"#)], "CMD must be"),
    ];

    let judge = |what: &str, result: Check, expect: &str| match result {
        Ok(()) => Some(format!("{what}: the check passed")),
        Err(e) if !e.contains(expect) => Some(format!("{what}: failed without mentioning {expect:?}: {e}")),
        Err(_) => None,
    };
    let good = load_compose();
    let mut missed: Vec<String> = Vec::new();
    for (what, check, edits, expect) in compose_cases {
        let mut doc = good.clone();
        edits.iter().for_each(|e| apply(&mut doc, e));
        missed.extend(judge(&format!("compose: {what}"), check(&doc), expect));
    }
    let df = Dockerfile::load();
    for (what, check, edits, expect) in docker_cases {
        let mut d = df.clone();
        edits.iter().for_each(|e| apply_docker(&mut d, e));
        missed.extend(judge(&format!("Dockerfile: {what}"), check(&d), expect));
    }
    assert!(missed.is_empty(), "checks that did not catch a broken file:\n  {}", missed.join("\n  "));
}

#[test]
fn dockerfile_parser_handles_continuations_comments_and_forms() {
    let df = Dockerfile::parse(
        "ARG V=1\nFROM rust:1 AS builder\nRUN a \\\n    # inside\n    && b\nFROM debian:bookworm-slim\n\
         ENV A=1 \\\n    B=two\nENV C three\nHEALTHCHECK --interval=5s \\\n  CMD [\"x\", \"y\"]\nUSER 1:1\n",
    );
    assert_eq!(df.stages.len(), 2, "{df:?}");
    assert_eq!(df.stages[0].name.as_deref(), Some("builder"));
    assert_eq!(df.stages[1].image, "debian:bookworm-slim");
    let run = df.last(0, "RUN").expect("the RUN");
    assert_eq!(run.args, "a && b", "a comment inside a continuation is dropped");
    let env = df.env(1);
    assert_eq!(env.get("A").map(String::as_str), Some("1"));
    assert_eq!(env.get("B").map(String::as_str), Some("two"));
    assert_eq!(env.get("C").map(String::as_str), Some("three"));
    let hc = df.last(1, "HEALTHCHECK").expect("the HEALTHCHECK");
    assert_eq!(words(hc.args.split_once("CMD ").expect("CMD").1), ["x", "y"]);
    assert_eq!(words("a  b"), ["a", "b"]);
    assert_eq!(
        declared_targets("[[bench]]\nname = \"q\"\n[[test]]\nname = \"t\"\npath = \"x/t.rs\"\n"),
        ["benches/q.rs", "x/t.rs"]
    );
    assert_eq!(interpolate("${A:-1}:${B-2}:$$x:${C}").unwrap(), "1:2:$x:");
    assert!(interpolate("${A").is_err());
    assert_eq!(
        pg_url_parts("postgres://u:p@h:6543/d?sslmode=disable").unwrap(),
        ("u".into(), "p".into(), "h".into(), 6543, "d".into())
    );
}
