//! `alien`: a handler that imports `acme:secrets/vault@1.0.0`, an interface no Kiln host
//! provides. Kiln must refuse it and name the interface.

#![allow(unsafe_code)]

wit_bindgen::generate!({
    inline: "
        package acme:secrets@1.0.0;

        interface vault {
            secret: func(name: string) -> string;
        }

        world alien {
            import vault;
            export handle: func(payload: list<u8>) -> list<u8>;
        }
    ",
});

struct Alien;

impl Guest for Alien {
    fn handle(payload: Vec<u8>) -> Vec<u8> {
        let mut out = acme::secrets::vault::secret("token").into_bytes();
        out.extend(payload);
        out
    }
}

export!(Alien);
