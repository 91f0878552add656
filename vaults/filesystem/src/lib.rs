//! The filesystem vault: PKCS#12 and PEM key and trust stores
