//! A short soak (`make soak` runs the 10-minute one): steady load through the suite over more
//! route names than the per-route cache holds, failures injected on every tenth route. Nothing
//! but the injected failures may show, no VM may fail, every stage must have done its work, and
//! memory must not run away after warm-up (the short run's tolerance is wider than the long
//! run's 5%, since V8 and Envoy's allocator are still settling after 15 s).

#![allow(clippy::expect_used, clippy::panic)]

use mesh_integration::soak::{self, Params};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_over_churned_routes_shows_only_the_injected_failures() {
    let p = Params {
        seconds: 40.0,
        warmup: 15.0,
        sample: 5.0,
        routes: 1500,
        rate: 300,
        connections: 4,
        rss_tolerance: 0.15,
        ..Params::default()
    };
    let report = soak::soak(&p, &|line| eprintln!("{line}"))
        .await
        .expect("the soak ran");
    eprintln!("{}", report.render());
    // Every route was visited, so the per-route cache (1,024) was refilled many times over.
    assert!(
        report.answered as f64 > p.routes as f64 * 3.0,
        "{}",
        report.answered
    );
    assert!(report.faulty_503 > 0 && report.faulty_ok > 0, "{report:?}");
    let failures = report.failures();
    assert!(failures.is_empty(), "{failures:#?}");
}
