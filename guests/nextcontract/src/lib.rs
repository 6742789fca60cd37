//! `nextcontract`: a handler built against `kiln:handler@0.2.0`, a contract version this host
//! does not serve. Kiln must refuse it and say which versions it serves.

#![allow(unsafe_code)]

wit_bindgen::generate!({
    inline: "
        package kiln:handler@0.2.0;

        interface host {
            log: func(message: string);
        }

        world handler {
            import host;
            export handle: func(payload: list<u8>) -> list<u8>;
        }
    ",
});

struct Next;

impl Guest for Next {
    fn handle(payload: Vec<u8>) -> Vec<u8> {
        kiln::handler::host::log("a 0.2.0 handler ran");
        payload
    }
}

export!(Next);
