//! Which request gets which fault: rules matched by path pattern, decided per request by a
//! pure function of (seed, rule, how many requests the rule has seen), so the same seed and
//! the same request sequence always give the same faults, whatever the wall clock says and
//! however requests to other paths interleave.

use super::Fault;

/// A seeded list of fault rules. Rules are tried in order; every rule whose pattern matches
/// a request counts it, and the first of them that fires decides the request's fault.
/// A request no rule fires on is served correctly.
#[derive(Clone, Debug, Default)]
pub struct Schedule {
    seed: u64,
    rules: Vec<Rule>,
}

#[derive(Clone, Debug)]
struct Rule {
    pattern: String,
    when: When,
    faults: Vec<Fault>,
}

/// When a rule fires, counting `k` = 0, 1, 2, … over the requests its pattern matches.
/// A firing rule applies its faults in turn (the j-th firing gets `faults[j % len]`), except
/// [`When::Chance`], which picks one at random.
#[derive(Clone, Debug, PartialEq)]
pub enum When {
    /// Every matching request.
    Always,
    /// The first `n` matching requests (`k < n`).
    First(u64),
    /// Every matching request from the n-th on (`k >= n`).
    After(u64),
    /// The matching requests with these indices.
    Requests(Vec<u64>),
    /// Every n-th matching request (`k % n == n - 1`); `n = 0` never fires.
    Every(u64),
    /// Each matching request with this probability (0.0..=1.0), from the seeded generator.
    Chance(f64),
}

impl Schedule {
    /// No faults at all: a correct mirror.
    pub fn clean() -> Schedule {
        Schedule::default()
    }

    /// An empty schedule whose random decisions derive from `seed`.
    pub fn seeded(seed: u64) -> Schedule {
        Schedule { seed, rules: Vec::new() }
    }

    /// Adds a rule: requests whose path (relative to the mirror, e.g. `payloads/ab….ferry`)
    /// matches `pattern` get `faults` when `when` says so. A pattern without `*` or `?` is a
    /// prefix (`"payloads/"`, `"channels/stable/index"`); with them it is a glob over the
    /// whole path where `*` matches any run of characters, `/` included
    /// (`"channels/*/index"`, `"*.manifest"`). An empty `faults` never fires.
    pub fn rule(mut self, pattern: &str, when: When, faults: &[Fault]) -> Schedule {
        self.rules.push(Rule { pattern: pattern.to_string(), when, faults: faults.to_vec() });
        self
    }

    /// `fault` on every request matching `pattern`.
    pub fn always(self, pattern: &str, fault: Fault) -> Schedule {
        self.rule(pattern, When::Always, &[fault])
    }

    /// `fault` on the first `n` requests matching `pattern`, then correct answers.
    pub fn first(self, pattern: &str, n: u64, fault: Fault) -> Schedule {
        self.rule(pattern, When::First(n), &[fault])
    }

    /// Correct answers to the first `n` requests matching `pattern`, then `fault` on each.
    pub fn after(self, pattern: &str, n: u64, fault: Fault) -> Schedule {
        self.rule(pattern, When::After(n), &[fault])
    }

    /// `fault` on the matching requests with these 0-based indices.
    pub fn requests(self, pattern: &str, indices: &[u64], fault: Fault) -> Schedule {
        self.rule(pattern, When::Requests(indices.to_vec()), &[fault])
    }

    /// With `probability`, one of `faults` (picked at random) on each matching request.
    pub fn random(self, pattern: &str, probability: f64, faults: &[Fault]) -> Schedule {
        self.rule(pattern, When::Chance(probability), faults)
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The faults a fresh server with this schedule gives a sequence of requests to `paths`,
    /// in order: what a test can compare the server's log with.
    pub fn preview<'a>(&self, paths: impl IntoIterator<Item = &'a str>) -> Vec<Option<Fault>> {
        let mut seen = Vec::new();
        paths.into_iter().map(|p| self.decide(&mut seen, p)).collect()
    }

    /// The fault for one request to `path`; `seen` holds how many requests each rule has
    /// counted so far and is advanced.
    pub(super) fn decide(&self, seen: &mut Vec<u64>, path: &str) -> Option<Fault> {
        seen.resize(self.rules.len(), 0);
        let mut chosen = None;
        for (i, rule) in self.rules.iter().enumerate() {
            if !matches(&rule.pattern, path) {
                continue;
            }
            let k = seen[i];
            seen[i] += 1;
            if chosen.is_none() {
                chosen = rule.fire(draw(self.seed, i as u64, k), k);
            }
        }
        chosen
    }
}

impl Rule {
    /// The fault of the k-th matching request, given its random draw.
    fn fire(&self, draw: u64, k: u64) -> Option<Fault> {
        if self.faults.is_empty() {
            return None;
        }
        let len = self.faults.len() as u64;
        let firing = match &self.when {
            When::Always => Some(k),
            When::First(n) => (k < *n).then_some(k),
            When::After(n) => (k >= *n).then(|| k - n),
            When::Requests(list) => list.iter().position(|&i| i == k).map(|p| p as u64),
            When::Every(n) => (*n > 0 && k % n == n - 1).then(|| k / n),
            When::Chance(p) => {
                // 53 bits of the draw as a uniform number in [0, 1).
                let u = (draw >> 11) as f64 / (1u64 << 53) as f64;
                (u < *p).then(|| splitmix64(draw) % len)
            }
        }?;
        usize::try_from(firing % len).ok().and_then(|j| self.faults.get(j).cloned())
    }
}

/// The random draw for request `k` of rule `rule`: a pure function, so decisions do not
/// depend on the order in which different rules see their requests.
fn draw(seed: u64, rule: u64, k: u64) -> u64 {
    splitmix64(splitmix64(seed ^ splitmix64(rule)) ^ k)
}

/// One step of splitmix64 (Steele, Lea, Flood 2014): a tiny, well-mixed generator.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether `path` matches `pattern`: a prefix, or a whole-path glob when the pattern holds
/// `*` or `?`.
pub(super) fn matches(pattern: &str, path: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        return path.starts_with(pattern);
    }
    glob(pattern.as_bytes(), path.as_bytes())
}

/// Iterative wildcard match (`*` any run, `?` one byte) with single-star backtracking.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_prefixes_or_globs() {
        assert!(matches("payloads/", "payloads/ab.ferry"));
        assert!(!matches("payloads/", "channels/stable/index"));
        assert!(matches("channels/*/index", "channels/stable/index"));
        assert!(!matches("channels/*/index", "channels/stable/index.old"));
        assert!(matches("*.manifest", "releases/ab.manifest"));
        assert!(matches("trust/root.?", "trust/root.2"));
        assert!(!matches("trust/root.?", "trust/root.10"));
        assert!(matches("*", ""));
    }

    #[test]
    fn rules_fire_when_told() {
        let s = Schedule::seeded(1)
            .rule("a/", When::First(2), &[Fault::status(500), Fault::status(503)])
            .rule("a/", When::Every(3), &[Fault::Endless])
            .after("b", 1, Fault::IgnoreRange);
        let got = s.preview(["a/x", "b", "a/x", "a/x", "b", "c", "a/y", "a/y", "a/z"]);
        let want = [
            Some(Fault::status(500)),
            None,
            Some(Fault::status(503)),
            Some(Fault::Endless),
            Some(Fault::IgnoreRange),
            None,
            None,
            None,
            Some(Fault::Endless),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn chance_is_fair_and_picks_every_fault() {
        let faults = [Fault::status(500), Fault::status(503), Fault::Endless, Fault::IgnoreRange];
        let s = Schedule::seeded(7).random("p", 0.25, &faults);
        let got = s.preview(std::iter::repeat_n("p", 20_000));
        let fired = got.iter().filter(|f| f.is_some()).count();
        assert!((4_500..5_500).contains(&fired), "{fired} of 20000 at p = 0.25");
        for f in &faults {
            let n = got.iter().filter(|g| g.as_ref() == Some(f)).count();
            assert!((1_000..1_500).contains(&n), "{f:?} chosen {n} times of {fired}");
        }
        assert_ne!(got, Schedule::seeded(8).random("p", 0.25, &faults).preview(std::iter::repeat_n("p", 20_000)));
    }
}
