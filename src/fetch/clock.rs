//! Milliseconds for throughput and the sleep between retries, on both targets.

/// Milliseconds since an arbitrary fixed origin (monotonic where the platform is).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn now_ms() -> f64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_secs_f64() * 1e3
}

/// Milliseconds since an arbitrary fixed origin (`Date.now()`).
#[cfg(target_arch = "wasm32")]
pub(crate) fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// Waits `ms` milliseconds (blocks the thread natively; a `setTimeout`
/// promise in the browser, window or worker).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) async fn sleep_ms(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// Waits `ms` milliseconds (blocks the thread natively; a `setTimeout`
/// promise in the browser, window or worker).
#[cfg(target_arch = "wasm32")]
pub(crate) async fn sleep_ms(ms: u64) {
    use wasm_bindgen::{JsCast, JsValue};
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        let global = js_sys::global();
        if let Ok(f) = js_sys::Reflect::get(&global, &JsValue::from_str("setTimeout")) {
            if let Ok(f) = f.dyn_into::<js_sys::Function>() {
                if f.call2(&global, &resolve, &JsValue::from_f64(ms as f64)).is_ok() {
                    return;
                }
            }
        }
        // No timer (should not happen in a window or worker): resolve at once.
        let _ = resolve.call0(&JsValue::UNDEFINED);
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}
