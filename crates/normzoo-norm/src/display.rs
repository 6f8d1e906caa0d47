//! How every layer prints.

use burn::module::DisplaySettings;

/// Every layer displays on one line: `GroupNorm {num_groups: 2, …, params: 8}`.
pub(crate) fn one_line_display() -> Option<DisplaySettings> {
    DisplaySettings::new()
        .with_new_line_after_attribute(false)
        .optional()
}
