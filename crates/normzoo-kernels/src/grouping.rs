//! How the values of a `[rows, K]` view map onto statistics and channels.

/// How the rows of a `[rows, K]` view map onto channels: row `r` is group `r % groups`, and
/// within a row the values are `channels_per_group` runs of `spatial` values, one run per
/// channel. GroupNorm: `G`, `C/G`, `∏ spatial`; InstanceNorm: `C`, `1`, `∏ spatial`;
/// LayerNorm and RMSNorm: `1`, `K`, `1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grouping {
    /// Groups per sample; `γ` and `β` hold `groups · channels_per_group` values.
    pub groups: usize,
    /// Channels in one row.
    pub channels_per_group: usize,
    /// Values of one channel in one row.
    pub spatial: usize,
    /// Subtract the mean (every normalizer but RMSNorm).
    pub center: bool,
    /// Added to the variance (or mean square) before the square root.
    pub eps: f64,
}

impl Grouping {
    /// The grouping from its parts, as a backend extension's op receives them.
    pub fn new(
        groups: usize,
        channels_per_group: usize,
        spatial: usize,
        center: bool,
        eps: f64,
    ) -> Self {
        Self {
            groups,
            channels_per_group,
            spatial,
            center,
            eps,
        }
    }

    /// Values in one row (`K`).
    pub fn row_len(&self) -> usize {
        self.channels_per_group * self.spatial
    }

    /// Values of `γ` and `β`.
    pub fn channels(&self) -> usize {
        self.groups * self.channels_per_group
    }
}
