//! `wrongworld`: a valid component of another world (it exports `run`, not `handle`), built
//! with wit-bindgen directly instead of the SDK; Kiln must refuse to load it.

#![allow(unsafe_code)]

wit_bindgen::generate!({
    inline: "
        package kiln:wrongworld;

        world wrong {
            export run: func() -> string;
        }
    ",
});

struct Wrong;

impl Guest for Wrong {
    fn run() -> String {
        "this component is not a kiln handler".to_owned()
    }
}

export!(Wrong);
