//! `imspd export BOOK` and `imspd import BOOK`: address books as vCard 4.0
//! (see [`crate::vcard`] for how fields map to properties).

use std::path::Path;

use super::Result;
use crate::store::{Store, abook, names};
use crate::vcard::{self, Card};

/// A quota no import reaches: the owner's usage is counted, not enforced.
const NOT_ENFORCED: u64 = u64::MAX;

fn book_name(book: &str) -> Result<String> {
    names::check_book(book.as_bytes()).map_err(|e| e.to_string())
}

/// Every entry of `book` as vCards. Returns them and how many there are.
pub fn export(data_dir: &Path, book: &str) -> Result<(Vec<u8>, usize)> {
    super::require_data_dir(data_dir)?;
    let book = book_name(book)?;
    let mut store = Store::open(data_dir);
    if !store.book_exists(&book).map_err(|e| e.to_string())? {
        return Err(format!("no address book {book}"));
    }
    let bytes = store.book_bytes(&book).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut count = 0;
    abook::scan_entries(&bytes, |name, fields| {
        let card = Card {
            name: name.to_vec(),
            fields: fields
                .iter()
                .map(|(f, v)| (String::from_utf8_lossy(f).into_owned(), v.to_vec()))
                .collect(),
        };
        vcard::write_card(&card, &mut out);
        count += 1;
    });
    Ok((out, count))
}

/// Parse vCards and check that each can be an entry, before anything is
/// written.
pub fn parse(input: &[u8]) -> Result<Vec<Card>> {
    let cards = vcard::read_cards(input).map_err(|e| e.to_string())?;
    for (i, c) in cards.iter().enumerate() {
        abook::check_entry_name(&c.name).map_err(|e| {
            format!(
                "vCard {} ({}): {e}",
                i + 1,
                String::from_utf8_lossy(&c.name)
            )
        })?;
        for (f, _) in &c.fields {
            if f.is_empty() || f.contains(['\r', '\n']) {
                return Err(format!("vCard {}: invalid field name {f:?}", i + 1));
            }
        }
    }
    Ok(cards)
}

/// Store `cards` into `book` (made if missing; its owner's directory
/// too). An entry that exists gets the cards' fields set, its other fields
/// kept. The owner's usage is kept up to date; the quota is not enforced.
pub fn import(data_dir: &Path, book: &str, cards: &[Card]) -> Result<usize> {
    super::require_data_dir(data_dir)?;
    let book = book_name(book)?;
    let owner = abook::owner_of(&book).to_string();
    names::check_user(owner.as_bytes()).map_err(|e| e.to_string())?;
    let mut store = Store::open(data_dir);
    if !store.book_exists(&book).map_err(|e| e.to_string())? {
        store.create_book(&book).map_err(|e| e.to_string())?;
    }
    for c in cards {
        store
            .store_entry(&book, &c.name, &c.fields, NOT_ENFORCED)
            .map_err(|e| format!("{}: {e}", String::from_utf8_lossy(&c.name)))?;
    }
    Ok(cards.len())
}
