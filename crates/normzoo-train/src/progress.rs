//! What the examples share for telling the user how training goes.

use std::fmt::Display;
use std::path::Path;
use std::process::ExitCode;

use image::{Rgb, RgbImage};

/// Means of a loss over consecutive windows of steps, to print a loss curve as training goes.
#[derive(Debug, Clone)]
pub struct LossWindow {
    every: usize,
    sum: f64,
    count: usize,
}

impl LossWindow {
    /// Windows of a tenth of `steps` (at least one step each).
    pub fn tenths(steps: usize) -> Self {
        Self {
            every: (steps / 10).max(1),
            sum: 0.0,
            count: 0,
        }
    }

    /// Adds the loss of `step` (counted from 1); at the last step of a window, returns the
    /// window's mean.
    pub fn push(&mut self, step: usize, loss: f32) -> Option<f32> {
        self.sum += loss as f64;
        self.count += 1;
        if !step.is_multiple_of(self.every) {
            return None;
        }
        let mean = self.sum / self.count as f64;
        (self.sum, self.count) = (0.0, 0);
        Some(mean as f32)
    }

    /// The mean of each tenth of `losses`, with the step each ends at.
    pub fn tenth_means(losses: &[f32]) -> Vec<(usize, f32)> {
        let mut window = Self::tenths(losses.len());
        losses
            .iter()
            .enumerate()
            .filter_map(|(i, &loss)| window.push(i + 1, loss).map(|mean| (i + 1, mean)))
            .collect()
    }
}

/// Saves a PNG of `rows` × `columns` square cells of `size` pixels, each enlarged `scale`
/// times, with a white gap of 2 pixels between cells: `pixel(row, column, x, y)` colours them.
///
/// # Errors
///
/// When the file cannot be written.
pub fn save_grid(
    path: &Path,
    [rows, columns]: [usize; 2],
    size: usize,
    scale: u32,
    pixel: impl Fn(usize, usize, usize, usize) -> [u8; 3],
) -> Result<(), image::ImageError> {
    const GAP: u32 = 2;
    let cell = size as u32 * scale + GAP;
    let mut picture = RgbImage::from_pixel(
        columns as u32 * cell - GAP,
        rows as u32 * cell - GAP,
        Rgb([255, 255, 255]),
    );
    for row in 0..rows {
        for column in 0..columns {
            for y in 0..size {
                for x in 0..size {
                    let colour = Rgb(pixel(row, column, x, y));
                    let left = column as u32 * cell + x as u32 * scale;
                    let top = row as u32 * cell + y as u32 * scale;
                    for dy in 0..scale {
                        for dx in 0..scale {
                            picture.put_pixel(left + dx, top + dy, colour);
                        }
                    }
                }
            }
        }
    }
    // PNG whatever the file is called: `--out masks` must not fail on a missing extension.
    picture.save_with_format(path, image::ImageFormat::Png)
}

/// A value in `[-1, 1]` as a byte, `−1 → 0`, `1 → 255`.
pub(crate) fn signed_to_byte(value: f32) -> u8 {
    ((value + 1.0) * 127.5).clamp(0.0, 255.0) as u8
}

/// An example's exit: `error: …` on stderr and a failure code for an error, no panic.
pub fn exit_code<E: Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_average_each_tenth() {
        let losses: Vec<f32> = (1..=20).map(|i| i as f32).collect();
        let means = LossWindow::tenth_means(&losses);
        assert_eq!(means.len(), 10);
        assert_eq!(means[0], (2, 1.5));
        assert_eq!(means[9], (20, 19.5));
        // Fewer steps than ten: every step is a window.
        assert_eq!(LossWindow::tenth_means(&[3.0, 1.0]), [(1, 3.0), (2, 1.0)]);
    }

    #[test]
    fn a_grid_has_its_cells_and_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grid.png");
        save_grid(&path, [2, 3], 4, 2, |row, column, _, _| {
            [row as u8 * 100, column as u8 * 100, 7]
        })
        .unwrap();
        let picture = image::open(&path).unwrap().to_rgb8();
        assert_eq!(
            (picture.width(), picture.height()),
            (3 * 10 - 2, 2 * 10 - 2)
        );
        assert_eq!(picture.get_pixel(0, 0).0, [0, 0, 7]);
        assert_eq!(picture.get_pixel(8, 0).0, [255, 255, 255], "the gap");
        assert_eq!(picture.get_pixel(10 + 7, 10 + 7).0, [100, 100, 7]);

        // A path without an extension still gets a PNG.
        let bare = dir.path().join("masks");
        save_grid(&bare, [1, 1], 4, 1, |_, _, _, _| [1, 2, 3]).unwrap();
        let format = image::ImageReader::open(&bare)
            .unwrap()
            .with_guessed_format()
            .unwrap()
            .format();
        assert_eq!(format, Some(image::ImageFormat::Png));
    }
}
