//! The commands, independent of how flags were parsed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use adapters_host::supervisor::Supervisor;
use provisioner_core::{
    Config, EngineProvisioner, Error, Format, PoolConfig, PreparedEngine, Progress, ProgressEvent,
    Result,
};
use serde_json::json;

use crate::render::out;
use crate::wiring::{Settings, provisioner};

/// Which pool and how to print.
#[derive(Debug, Clone)]
pub struct Target {
    /// Config file.
    pub config: std::path::PathBuf,
    /// Pool id.
    pub pool: Option<String>,
    /// JSON output.
    pub json: bool,
}

/// Reads and validates a configuration file.
pub fn load_config(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, &e))?;
    let name = path.to_string_lossy();
    Config::parse(&text, Format::from_file_name(&name), &name)
}

fn load_pool(target: &Target, progress: &dyn Progress) -> Result<PoolConfig> {
    let config = load_config(&target.config)?;
    if !config.other_sections.is_empty() {
        let names: Vec<&str> = config.other_sections.keys().map(String::as_str).collect();
        progress.report(ProgressEvent::Note {
            message: format!(
                "ignoring top-level sections not read by the engine provisioner: {}",
                names.join(", ")
            ),
        });
    }
    Ok(config.pool(target.pool.as_deref())?.clone())
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// `orchctl config schema`
pub fn schema() {
    out(&Config::json_schema());
}

/// `orchctl config check`
pub fn check(path: &Path) -> Result<()> {
    let config = load_config(path)?;
    let ids: Vec<&str> = config.pools.iter().map(|p| p.id.as_str()).collect();
    out(&format!("ok: {} pool(s): {}", ids.len(), ids.join(", ")));
    Ok(())
}

/// `orchctl engine plan`
pub fn plan(settings: &Settings, target: &Target, progress: Arc<dyn Progress>) -> Result<()> {
    let pool = load_pool(target, progress.as_ref())?;
    let plan = provisioner(settings, progress).plan(&pool)?;
    if target.json {
        out(&to_json(&json!({ "digest": plan.digest(), "plan": plan })));
    } else {
        out(&format!(
            "plan for pool `{}` ({} / {}), digest {}",
            plan.pool_id,
            plan.engine,
            plan.mode,
            plan.digest()
        ));
        for (index, step) in plan.steps.iter().enumerate() {
            let value = serde_json::to_value(step).unwrap_or_default();
            out(&format!("{:>2}. {}", index + 1, value));
        }
    }
    Ok(())
}

/// `orchctl engine prepare`
pub async fn prepare(
    settings: &Settings,
    target: &Target,
    progress: Arc<dyn Progress>,
) -> Result<PreparedEngine> {
    let pool = load_pool(target, progress.as_ref())?;
    let prepared = provisioner(settings, progress).prepare(&pool).await?;
    if target.json {
        out(&to_json(&prepared));
    } else {
        describe(&prepared);
    }
    Ok(prepared)
}

fn describe(prepared: &PreparedEngine) {
    out(&format!("pool:           {}", prepared.pool_id));
    out(&format!("engine_version: {}", prepared.engine_version));
    out(&format!(
        "cache:          {}",
        if prepared.metadata.cache_hit {
            "hit"
        } else {
            "built"
        }
    ));
    out(&format!("bin:            {}", prepared.bin.display()));
    let args: Vec<String> = prepared
        .args
        .iter()
        .map(|a| provisioner_core::shell_quote(a))
        .collect();
    out(&format!("args:           {}", args.join(" ")));
    for (key, value) in &prepared.env {
        out(&format!("env:            {key}={value}"));
    }
    out(&format!("workdir:        {}", prepared.workdir.display()));
}

/// `orchctl engine up`
pub async fn up(settings: &Settings, target: &Target, progress: Arc<dyn Progress>) -> Result<()> {
    let pool = load_pool(target, progress.as_ref())?;
    let prepared = provisioner(settings, progress.clone())
        .prepare(&pool)
        .await?;
    let supervisor = Supervisor::new(settings.layout().run_dir);
    let state = supervisor.start(&prepared)?;
    let step = format!("wait for {} to be ready", prepared.pool_id);
    progress.report(ProgressEvent::Started {
        step: step.clone(),
        detail: Some(format!(
            "pid {}, log: {}",
            state.pid,
            state.log_file.display()
        )),
    });
    let timeout = Duration::from_secs(prepared.metadata.readiness.timeout_seconds);
    let checked = async {
        supervisor.wait_ready(&state, timeout).await?;
        supervisor.verify_identity(&state).await
    }
    .await;
    if let Err(error) = checked {
        // Never leave a server running that is not ready or not the build we prepared.
        let _ = supervisor
            .stop(&prepared.pool_id, Duration::from_secs(5))
            .await;
        return Err(error);
    }
    progress.report(ProgressEvent::Finished { step });
    let url = format!("http://127.0.0.1:{}", prepared.metadata.readiness.port);
    if target.json {
        out(&to_json(&json!({
            "pool_id": prepared.pool_id,
            "pid": state.pid,
            "url": url,
            "engine_version": prepared.engine_version,
            "log_file": state.log_file,
            "cache_hit": prepared.metadata.cache_hit,
        })));
    } else {
        out(&format!(
            "{} is up: pid {}, {url}, engine_version {}",
            prepared.pool_id, state.pid, prepared.engine_version
        ));
        out(&format!("log: {}", state.log_file.display()));
    }
    Ok(())
}

/// The pool id for commands that need no full config (down, status): the config still names it.
fn pool_id(target: &Target, progress: &dyn Progress) -> Result<String> {
    Ok(load_pool(target, progress)?.id)
}

/// `orchctl engine down`; returns whether something was stopped.
pub async fn down(
    settings: &Settings,
    target: &Target,
    grace: Duration,
    progress: Arc<dyn Progress>,
) -> Result<bool> {
    let id = pool_id(target, progress.as_ref())?;
    let stopped = Supervisor::new(settings.layout().run_dir)
        .stop(&id, grace)
        .await?;
    if target.json {
        out(&to_json(&json!({ "pool_id": id, "stopped": stopped })));
    } else if stopped {
        out(&format!("{id} stopped"));
    } else {
        out(&format!("{id} was not running"));
    }
    Ok(stopped)
}

/// `orchctl engine status`; returns whether the engine is alive.
pub async fn status(
    settings: &Settings,
    target: &Target,
    progress: Arc<dyn Progress>,
) -> Result<bool> {
    let id = pool_id(target, progress.as_ref())?;
    let status = Supervisor::new(settings.layout().run_dir)
        .status(&id)
        .await?;
    let alive = status.as_ref().is_some_and(|s| s.alive);
    if target.json {
        let value = match &status {
            Some(s) => json!({
                "pool_id": id,
                "running": s.alive,
                "pid": s.state.pid,
                "alive": s.alive,
                "ready": s.ready,
                "engine_version": s.state.engine_version,
                "container": s.container,
                "ports": s.state.ports,
                "log_file": s.state.log_file,
            }),
            None => json!({ "pool_id": id, "running": false }),
        };
        out(&to_json(&value));
    } else {
        match &status {
            Some(s) => {
                out(&format!("pool:           {id}"));
                out(&format!("pid:            {}", s.state.pid));
                out(&format!("alive:          {}", s.alive));
                out(&format!("ready:          {}", s.ready));
                out(&format!("engine_version: {}", s.state.engine_version));
                if let Some(container) = &s.container {
                    out(&format!("container:      {container}"));
                }
                out(&format!("log:            {}", s.state.log_file.display()));
            }
            None => out(&format!("{id} is not running")),
        }
    }
    Ok(alive)
}
