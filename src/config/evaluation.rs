//! `[evaluation]`: 好差评 (GB/T 39735) and the rectification (整改) a 差评 opens — the indicator
//! set of each channel, the rectification's time in working days and when its yellow warning
//! comes. The rules that use them are in `crate::evaluation`.

use serde::Deserialize;

/// The 好差评 settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationConfig {
    /// The indicators each channel scores, 1–5 each. 整体满意度 (the overall level, given as
    /// `Evaluation.level`) may be listed; every other indicator of a channel must be scored.
    #[serde(default)]
    pub indicators: IndicatorSets,
    /// Working days a rectification has, from the evaluation date, in the hall's working-day
    /// calendar (default 5).
    #[serde(default = "default_rectification_working_days")]
    pub rectification_working_days: u32,
    /// Share of a rectification's time after which its yellow warning is raised (0 < share <
    /// 1); default: `[sla] warn_share`, the tasks' share.
    #[serde(default)]
    pub warn_share: Option<f64>,
}

/// The indicator set of each channel (GB/T 39735).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndicatorSets {
    /// At a window (default 整体满意度, 服务效率, 服务水平, 服务态度).
    #[serde(default = "window_indicators")]
    pub window: Vec<String>,
    /// At a self-service or evaluation terminal (default: as at a window).
    #[serde(default = "window_indicators")]
    pub terminal: Vec<String>,
    /// Online (default 整体满意度, 办事效率, 办事指南精确度, 办事便捷度, 平台操作性).
    #[serde(default = "online_indicators")]
    pub online: Vec<String>,
}

impl Default for IndicatorSets {
    fn default() -> Self {
        IndicatorSets {
            window: window_indicators(),
            terminal: window_indicators(),
            online: online_indicators(),
        }
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn window_indicators() -> Vec<String> {
    names(&["整体满意度", "服务效率", "服务水平", "服务态度"])
}

fn online_indicators() -> Vec<String> {
    names(&[
        "整体满意度",
        "办事效率",
        "办事指南精确度",
        "办事便捷度",
        "平台操作性",
    ])
}

fn default_rectification_working_days() -> u32 {
    5
}

impl Default for EvaluationConfig {
    fn default() -> Self {
        EvaluationConfig {
            indicators: IndicatorSets::default(),
            rectification_working_days: default_rectification_working_days(),
            warn_share: None,
        }
    }
}
