//! GPU error paths: no adapter, device lost. Own test binary because it sets `WGPU_BACKEND`.
#![cfg(feature = "gpu")]

use latentlens::gpu::{GpuContext, GpuError, GpuOptions, GpuSearch, PqCodebooks};

#[test]
fn no_adapter_says_to_use_the_cpu_search() {
    // a backend this platform does not have: no adapter, whatever the machine
    let other = if cfg!(target_os = "macos") {
        "dx12"
    } else {
        "metal"
    };
    // both tests of this binary hold LOCK, so no other thread reads the environment meanwhile
    let _guard = EnvLock::set("WGPU_BACKEND", other);
    let err = GpuContext::new_blocking(GpuOptions::default())
        .expect_err("no adapter for a foreign backend");
    drop(_guard);
    assert!(matches!(err, GpuError::NoAdapter(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("no WebGPU/Vulkan adapter") && msg.contains("CPU search"),
        "{msg}"
    );
}

#[test]
fn device_lost_is_reported_not_panicked() {
    let _lock = LOCK.lock();
    let ctx = match GpuContext::new_blocking(GpuOptions::default()) {
        Ok(c) => c,
        Err(e) if std::env::var("LATENTLENS_REQUIRE_ASSETS").as_deref() != Ok("1") => {
            eprintln!("\n!!!!! SKIPPING GPU TEST: {e} !!!!!\n");
            return;
        }
        Err(e) => panic!("LATENTLENS_REQUIRE_ASSETS=1 but no GPU context: {e}"),
    };
    let cent = vec![0.5f32; 4 * 256 * 2];
    let books = PqCodebooks {
        d: 8,
        m: 4,
        dsub: 2,
        centroids: &cent,
        offsets: None,
    };
    let mut gs = GpuSearch::new(&ctx, &books, 0).expect("upload");
    gs.push_codes(&[1, 2, 3, 4, 5, 6, 7, 8], 2).expect("push");
    assert_eq!(
        pollster::block_on(gs.search(&[1.0; 8], 1, 2))
            .expect("search before loss")
            .len(),
        1
    );
    ctx.device().destroy();
    let _ = ctx.device().poll(wgpu::PollType::Poll);
    let err =
        pollster::block_on(gs.search(&[1.0; 8], 1, 2)).expect_err("search on a destroyed device");
    assert!(matches!(err, GpuError::DeviceLost(_)), "{err:?}");
    assert!(err.to_string().contains("GPU device lost"), "{err}");
}

static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Sets an environment variable while holding the test lock; restores it on drop.
struct EnvLock {
    key: &'static str,
    old: Option<String>,
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl EnvLock {
    fn set(key: &'static str, value: &str) -> Self {
        let lock = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let old = std::env::var(key).ok();
        std::env::set_var(key, value);
        EnvLock {
            key,
            old,
            _lock: lock,
        }
    }
}

impl Drop for EnvLock {
    fn drop(&mut self) {
        match &self.old {
            Some(v) => std::env::set_var(self.key, v),
            None => std::env::remove_var(self.key),
        }
    }
}
