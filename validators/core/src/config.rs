//! Typed core model references, spelled as in Zilla's `zilla.yaml`.

use schemars::JsonSchema;
use serde::Deserialize;
use zilla_engine::components::ValidateConfig;

/// `{model: string, ...}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StringModelConfig {
    /// `string`.
    pub model: String,
    /// How the text is encoded: `utf_8` (the default) or `utf_16`.
    pub encoding: Option<StringEncoding>,
    /// The fewest bytes the encoded text may have.
    #[serde(rename = "minLength")]
    #[schemars(range(min = 1))]
    pub min_length: Option<u64>,
    /// The most bytes the encoded text may have.
    #[serde(rename = "maxLength")]
    #[schemars(range(min = 1))]
    pub max_length: Option<u64>,
    /// A regular expression the whole text must match.
    pub pattern: Option<String>,
    /// `strict` (default) or `lenient`.
    pub validate: Option<ValidateConfig>,
}

/// `encoding` of a string model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StringEncoding {
    /// UTF-8.
    #[serde(rename = "utf_8")]
    Utf8,
    /// UTF-16: big-endian unless a byte order mark says otherwise.
    #[serde(rename = "utf_16")]
    Utf16,
}

/// `format` of a number model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NumberFormat {
    /// Decimal text (the default).
    #[default]
    Text,
    /// Big-endian binary of the type's width.
    Binary,
}

/// `{model: int32 | int64, ...}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntegerModelConfig {
    /// `int32` or `int64`.
    pub model: String,
    /// `text` (default) or `binary`.
    #[serde(default)]
    pub format: NumberFormat,
    /// The interval values must lie in: `[min,max]`, `(min,max)` or a mix; either bound may
    /// be left out (`[0,)`).
    #[schemars(extend("pattern" = r"^[\(\[](-?\d+)?,(-?\d+)?[\)\]]$"))]
    pub range: Option<String>,
    /// Values must be a multiple of this.
    pub multiple: Option<i64>,
    /// `strict` (default) or `lenient`.
    pub validate: Option<ValidateConfig>,
}

/// `{model: float | double, ...}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecimalModelConfig {
    /// `float` or `double`.
    pub model: String,
    /// `text` (default) or `binary`.
    #[serde(default)]
    pub format: NumberFormat,
    /// The interval values must lie in, as for integers; bounds may have decimals.
    #[schemars(extend("pattern" = r"^[\(\[](-?\d+(\.\d+)?)?,(-?\d+(\.\d+)?)?[\)\]]$"))]
    pub range: Option<String>,
    /// Values must be a multiple of this.
    pub multiple: Option<f64>,
    /// `strict` (default) or `lenient`.
    pub validate: Option<ValidateConfig>,
}

/// `{model: boolean | bytes, validate}`: no options of their own.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlainModelConfig {
    /// `boolean` or `bytes`.
    pub model: String,
    /// `strict` (default) or `lenient`.
    pub validate: Option<ValidateConfig>,
}
