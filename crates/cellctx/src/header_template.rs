//! Header-map templates for outgoing requests: filling an empty outgoing map
//! by cloning a map that already holds the right header names (hashed and
//! placed once) and writing one value per field, instead of hashing and
//! inserting every header of every request.

use std::sync::OnceLock;

use http::{HeaderMap, HeaderValue};

use crate::headers::{FIELDS, HeaderNames};

/// Which context fields a map carries: bit `i` for field `i` in the order of
/// [`HeaderNames::field`] (cell 0 ... `baggage` 10).
pub(crate) type Shape = u16;

/// How many shapes are remembered (a shape's slot is fixed by its bits).
const SLOTS: usize = 16;

/// A map holding exactly the headers of `shape`, in field order, with empty values.
#[derive(Debug)]
struct Template {
    shape: Shape,
    map: HeaderMap,
}

/// The values of one outgoing context, by field index, and its [`Shape`].
pub(crate) struct FieldValues {
    values: [Option<HeaderValue>; FIELDS],
    shape: Shape,
}

impl FieldValues {
    /// No field yet.
    pub(crate) fn new() -> Self {
        FieldValues { values: Default::default(), shape: 0 }
    }

    /// Sets field `i` (ignored past the last field).
    pub(crate) fn set(&mut self, i: usize, value: HeaderValue) {
        if let Some(slot) = self.values.get_mut(i) {
            *slot = Some(value);
            self.shape |= 1 << i;
        }
    }
}

/// Templates of the first shapes seen, one per slot, set once and then read
/// with one atomic load. A shape whose slot another shape took first is filled
/// by inserting each header (as without templates). A service sends a handful
/// of shapes (which of the optional fields its requests carry), so the slots
/// rarely clash. Templates hold names only (empty values), so they pin no
/// request's buffers.
#[derive(Debug, Default)]
pub(crate) struct Templates {
    slots: [OnceLock<Template>; SLOTS],
}

impl Clone for Templates {
    /// An empty set: a changed configuration (other header names) starts over.
    fn clone(&self) -> Self {
        Templates::default()
    }
}

impl Templates {
    fn slot(&self, shape: Shape) -> &OnceLock<Template> {
        // Fold the 11 bits into 4: shapes differing in one field never share a slot.
        let s = usize::from(shape);
        &self.slots[(s ^ (s >> 4) ^ (s >> 8)) % SLOTS]
    }

    /// Fills the empty map `headers` with `fields` under `names`: from the
    /// shape's template when there is one, else by inserting each header (and
    /// the result becomes the shape's template if its slot is free).
    pub(crate) fn fill(&self, names: &HeaderNames, fields: &mut FieldValues, headers: &mut HeaderMap) {
        let shape = fields.shape;
        let slot = self.slot(shape);
        if let Some(template) = slot.get().filter(|t| t.shape == shape) {
            *headers = template.map.clone();
            // The template's entries are the shape's fields in field order.
            for (out, value) in headers.values_mut().zip(fields.values.iter_mut().filter_map(Option::take)) {
                *out = value;
            }
            return;
        }
        headers.reserve(FIELDS);
        for (i, value) in fields.values.iter_mut().enumerate() {
            if let Some(value) = value.take() {
                headers.append(names.field(i).clone(), value);
            }
        }
        if slot.get().is_none() {
            let mut map = headers.clone();
            for value in map.values_mut() {
                *value = HeaderValue::from_static("");
            }
            // A racing request of the same slot may have set it first: either stays.
            let _ = slot.set(Template { shape, map });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn fields(pairs: &[(usize, &'static str)]) -> FieldValues {
        let mut f = FieldValues::new();
        for &(i, v) in pairs {
            f.set(i, HeaderValue::from_static(v));
        }
        f
    }

    fn as_pairs(map: &HeaderMap) -> Vec<(String, String)> {
        map.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned())).collect()
    }

    #[test]
    fn a_template_fill_equals_an_insert_fill() {
        let names = HeaderNames::default();
        let templates = Templates::default();
        let mut first = HeaderMap::new();
        templates.fill(&names, &mut fields(&[(0, "eu-1"), (1, "r1"), (8, "tp1")]), &mut first);
        let mut second = HeaderMap::new();
        templates.fill(&names, &mut fields(&[(0, "eu-2"), (1, "r2"), (8, "tp2")]), &mut second);
        assert_eq!(as_pairs(&first), [("x-cell-id", "eu-1"), ("x-request-id", "r1"), ("traceparent", "tp1")].map(|(a, b)| (a.to_owned(), b.to_owned())));
        assert_eq!(as_pairs(&second), [("x-cell-id", "eu-2"), ("x-request-id", "r2"), ("traceparent", "tp2")].map(|(a, b)| (a.to_owned(), b.to_owned())));
        // Lookups by name work on the cloned map (the hashes came with it).
        assert_eq!(second["traceparent"], "tp2");
        assert_eq!(second["x-request-id"], "r2");
        assert!(second.get("x-tenant-id").is_none());
    }

    #[test]
    fn every_shape_is_filled_correctly_with_or_without_its_template() {
        let names = HeaderNames::default();
        let templates = Templates::default();
        // Every shape over the first 6 fields, twice: each fill must hold exactly its fields.
        for round in 0..2 {
            for shape in 0u16..64 {
                let mut f = FieldValues::new();
                let mut want = Vec::new();
                for i in 0..6 {
                    if shape & (1 << i) != 0 {
                        let v = format!("v{i}-{round}");
                        f.set(i, HeaderValue::from_str(&v).unwrap());
                        want.push((names.field(i).as_str().to_owned(), v));
                    }
                }
                let mut map = HeaderMap::new();
                templates.fill(&names, &mut f, &mut map);
                assert_eq!(as_pairs(&map), want, "shape {shape:#b}, round {round}");
                for (k, v) in &want {
                    assert_eq!(map[k.as_str()], v.as_str());
                }
            }
        }
    }

    #[test]
    fn templates_keep_no_request_values() {
        let names = HeaderNames::default();
        let templates = Templates::default();
        let mut map = HeaderMap::new();
        templates.fill(&names, &mut fields(&[(2, "acme")]), &mut map);
        let template = templates.slot(1 << 2).get().unwrap();
        assert_eq!(as_pairs(&template.map), [("x-tenant-id".to_owned(), String::new())]);
    }
}
