//! What a status change selects: operator credentials stay out of bulk selections unless asked
//! for, and a resumption leaves the holds a device's suspension made. The rules are checked
//! inside the write by the backends (`sql::lifecycle`).

use super::CertSelector;

/// Operator credentials as the profiles in force define them (the store does not know roles).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Operators {
    /// Profiles whose role is not `device`: admin, provisioner, broker-agent, the CA's own.
    pub profiles: Vec<String>,
    /// Profiles whose role is `admin`: a change that leaves none of their certificates valid
    /// (when one was) is refused.
    pub admin_profiles: Vec<String>,
    /// Whether a lot, zone or profile selection takes operator credentials too.
    pub include_in_bulk: bool,
}

impl Operators {
    /// Whether `selector` leaves a certificate of `profile` out: a lot, zone or profile
    /// selection takes operator credentials only when asked to; a serial or a device takes
    /// what it names.
    pub fn leaves_out(&self, selector: &CertSelector, profile: &str) -> bool {
        let bulk = matches!(
            selector,
            CertSelector::Lot(_) | CertSelector::Zone(_) | CertSelector::Profile(_)
        );
        bulk && !self.include_in_bulk && self.profiles.iter().any(|p| p == profile)
    }
}

/// What a status change selects, and what it leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection<T> {
    /// The certificates the change applies to, in issue order.
    pub certificates: Vec<T>,
    /// Operator credentials matched but left out ([`Operators::leaves_out`]).
    pub operators_left_out: u32,
    /// Held certificates a resumption leaves on hold: their device's suspension made the hold.
    pub device_holds_left_out: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_selections_leave_operators_out_unless_asked() {
        let mut ops = Operators {
            profiles: vec!["admin".into(), "broker-agent".into()],
            admin_profiles: vec!["admin".into()],
            include_in_bulk: false,
        };
        let zone = CertSelector::Zone("field".into());
        assert!(ops.leaves_out(&zone, "admin"));
        assert!(ops.leaves_out(&CertSelector::Lot("l".into()), "broker-agent"));
        assert!(ops.leaves_out(&CertSelector::Profile("admin".into()), "admin"));
        assert!(!ops.leaves_out(&zone, "sensor"));
        // A profile no longer configured counts as a device: taken.
        assert!(!ops.leaves_out(&zone, "retired-profile"));
        // Named explicitly: taken.
        assert!(!ops.leaves_out(&CertSelector::Device("admin".into()), "admin"));
        assert!(!ops.leaves_out(&CertSelector::Serial("4a".into()), "admin"));
        ops.include_in_bulk = true;
        assert!(!ops.leaves_out(&zone, "admin"));
    }
}
