//! The wall clock.

use std::time::SystemTime;

use provisioner_core::Clock;

/// The host's real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reports_the_current_time() {
        let before = SystemTime::now();
        let now = SystemClock.now();
        let after = SystemTime::now();
        assert!(now >= before && now <= after + Duration::from_millis(1));
    }
}
