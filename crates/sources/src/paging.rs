//! Listings that follow a server's pages (Graph delta `@odata.nextLink`,
//! EWS `SyncFolderItems` with `IncludesLastItemInRange` false) end. A server
//! that always announces another page would otherwise keep one pass
//! requesting pages forever: each request has its bounds, the pass had none.

use crate::SourceError;

/// Pages one listing may follow: 20,000 Graph pages of 200 are 4 million
/// changes, far beyond a service-desk folder.
pub const MAX_PAGES: usize = 20_000;
/// Pages in a row that list nothing. Graph may send a few empty pages while
/// it prepares a large first listing; a hundred in a row is a loop.
pub const MAX_EMPTY_PAGES: usize = 100;
/// Messages one listing may hold (their ids stay in memory until the pass
/// journals them).
pub const MAX_LISTED: usize = 1_000_000;

/// Counts the pages of one listing.
#[derive(Debug)]
pub struct Paging {
    /// What is being listed, for the error: "Graph delta pages of mailbox x".
    what: String,
    pages: usize,
    empty_in_a_row: usize,
}

impl Paging {
    pub fn new(what: impl Into<String>) -> Self {
        Self { what: what.into(), pages: 0, empty_in_a_row: 0 }
    }

    /// After each page that announces another: `items` on this page (of any
    /// kind), `listed` messages held so far. Errs once the listing looks
    /// endless; the error is transient (the next pass starts over).
    pub fn next_page(&mut self, items: usize, listed: usize) -> Result<(), SourceError> {
        self.pages += 1;
        self.empty_in_a_row = if items == 0 { self.empty_in_a_row + 1 } else { 0 };
        let why = if self.pages >= MAX_PAGES {
            format!("{MAX_PAGES} pages")
        } else if self.empty_in_a_row >= MAX_EMPTY_PAGES {
            format!("{MAX_EMPTY_PAGES} empty pages in a row")
        } else if listed > MAX_LISTED {
            format!("over {MAX_LISTED} messages")
        } else {
            return Ok(());
        };
        Err(SourceError::transient(format!(
            "the server kept announcing more {} ({why}, and still not the last page): stopped this listing; \
             the server is misbehaving, or the folder holds more than mailrobot lists in one pass",
            self.what
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_pages_in_a_row_end_the_listing() {
        let mut paging = Paging::new("test pages");
        for _ in 0..MAX_EMPTY_PAGES - 1 {
            paging.next_page(0, 0).unwrap();
        }
        // A page with items resets the run.
        paging.next_page(3, 3).unwrap();
        for _ in 0..MAX_EMPTY_PAGES - 1 {
            paging.next_page(0, 3).unwrap();
        }
        let err = paging.next_page(0, 3).unwrap_err();
        assert!(err.is_transient() && err.to_string().contains("100 empty pages in a row"), "{err}");
    }

    #[test]
    fn pages_and_listed_messages_have_a_ceiling() {
        let mut paging = Paging::new("test pages");
        let err = (0..MAX_PAGES).find_map(|i| paging.next_page(1, i).err()).unwrap();
        assert!(err.to_string().contains("20000 pages"), "{err}");
        let err = Paging::new("test pages").next_page(1, MAX_LISTED + 1).unwrap_err();
        assert!(err.to_string().contains("over 1000000 messages"), "{err}");
    }
}
