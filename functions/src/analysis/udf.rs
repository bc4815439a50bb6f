//! SQL functions over the `properties` column (JSON text): `property(properties, 'name')` is a property's
//! value as text (strings as they are, other values as JSON), `property_number(properties, 'name')` as a
//! number (numbers, and strings that read as one); null when absent.

use std::sync::Arc;

use arrow_array::builder::{Float64Builder, StringBuilder};
use arrow_array::cast::AsArray as _;
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use serde_json::Value;

/// Registers the functions in `ctx`.
pub(super) fn register(ctx: &SessionContext) {
    let text = Arc::new(|args: &[ColumnarValue]| each(args, Out::Text));
    let number = Arc::new(|args: &[ColumnarValue]| each(args, Out::Number));
    let input = vec![DataType::Utf8, DataType::Utf8];
    ctx.register_udf(create_udf("property", input.clone(), DataType::Utf8, Volatility::Immutable, text));
    ctx.register_udf(create_udf("property_number", input, DataType::Float64, Volatility::Immutable, number));
}

#[derive(Clone, Copy)]
enum Out {
    Text,
    Number,
}

fn each(args: &[ColumnarValue], out: Out) -> datafusion::error::Result<ColumnarValue> {
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let [properties, names] = arrays.as_slice() else {
        return Err(DataFusionError::Plan("property: takes (properties, 'name')".into()));
    };
    let (properties, names) = (properties.as_string::<i32>(), names.as_string::<i32>());
    let value = |row: usize| -> Option<Value> {
        if properties.is_null(row) || names.is_null(row) {
            return None;
        }
        let mut map: serde_json::Map<String, Value> = serde_json::from_str(properties.value(row)).ok()?;
        map.remove(names.value(row))
    };
    let array: ArrayRef = match out {
        Out::Text => {
            let mut b = StringBuilder::new();
            for row in 0..properties.len() {
                match value(row) {
                    None | Some(Value::Null) => b.append_null(),
                    Some(Value::String(s)) => b.append_value(s),
                    Some(other) => b.append_value(other.to_string()),
                }
            }
            Arc::new(b.finish())
        }
        Out::Number => {
            let mut b = Float64Builder::with_capacity(properties.len());
            for row in 0..properties.len() {
                b.append_option(value(row).and_then(|v| match v {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
                    _ => None,
                }));
            }
            Arc::new(b.finish())
        }
    };
    Ok(ColumnarValue::Array(array))
}
