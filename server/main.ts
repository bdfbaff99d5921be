console.log("CommuCat");
